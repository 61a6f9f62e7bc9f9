//! The `cairn` command line: a thin layer over the `cairn` library. See `cairn --help`.
#![forbid(unsafe_code)]

use cairn_cli as cli;

// sled copies and frees tree nodes on every write; mimalloc makes that allocation-heavy path
// measurably faster than the system allocator (DESIGN.md, "Dependencies and why"). The library
// sets no global allocator: that choice belongs to the program.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
