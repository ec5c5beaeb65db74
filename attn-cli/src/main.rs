//! attnviz command-line tool.
fn main() {
    eprintln!("attnviz: not yet implemented");
    std::process::exit(2);
}
