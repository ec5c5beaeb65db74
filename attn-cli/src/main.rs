//! The `attnviz` binary: [`attn_cli::main_from`] on the process's arguments.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(attn_cli::main_from(std::env::args_os()))
}
