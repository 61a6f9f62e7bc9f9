//! The `cairn` command line: a thin layer over the `cairn` library. See `cairn --help`.
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
