//! Benchmarks and peer comparisons of attnviz.
