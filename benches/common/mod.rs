//! What the benchmarks share: reading their `NAME=number` settings from
//! the environment. Never measures anything itself.

/// The number in the environment variable `name`, or `default` when it is
/// unset; a value that is not a number ends the benchmark with exit code 2.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            eprintln!("{name}={text:?} is not a number");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}
