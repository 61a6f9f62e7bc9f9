//! Writes the seed corpora of the fuzz targets to `fuzz/corpus/<target>/` (run from the
//! repository root: `cargo run --example fuzz_seeds`). The records seeds hold real records of a
//! freshly built store, so rerunning changes their ids but not their shape.
fn main() -> std::io::Result<()> {
    for target in ["config_toml", "records", "content_decoder"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        std::fs::create_dir_all(&dir)?;
        let seeds = cairn::fuzzing::seeds(target);
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}
