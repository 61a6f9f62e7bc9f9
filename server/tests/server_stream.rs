//! A large upload and download stream through the server in bounded memory. One test in this
//! file, so that nothing else in the process moves the peak RSS it measures.

mod common;

use std::io::Read;

use common::TestServer;
use serde_json::json;

/// Deterministic, incompressible bytes, generated as they are read (never held whole).
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = (self.state >> 24) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn hash_of(mut r: impl Read) -> (u64, blake3::Hash) {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0;
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    (n, h.finalize())
}

#[test]
fn large_upload_and_download_stream_in_bounded_memory() {
    const SIZE: u64 = 64 << 20;
    let srv = TestServer::start();
    let c = srv.anon();
    let s = c.session(&json!({}));
    let (_, want) = hash_of(Noise {
        state: 0x9e3779b97f4a7c15,
        left: SIZE,
    });
    let before = peak_rss_kib();

    // Chunked upload (no Content-Length), generated on the fly, with the declared hash.
    let r = c.stream(
        "PUT",
        &format!(
            "/v1/sessions/{s}/artifacts/big.bin?kind=tool_result&hash={}",
            want.to_hex()
        ),
        Noise {
            state: 0x9e3779b97f4a7c15,
            left: SIZE,
        },
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let a = r.json();
    assert_eq!(a["size"], SIZE);
    assert_eq!(a["hash"], want.to_hex().as_str());
    let id = a["id"].as_str().unwrap().to_string();

    // Streamed download, hashed as it arrives.
    let (n, got) = c.get_reader(&format!("/v1/artifacts/{id}/content"), |status, r| {
        assert_eq!(status, 200);
        hash_of(r)
    });
    assert_eq!(n, SIZE);
    assert_eq!(got, want);
    // A range at the end of the large content.
    let r = c.call(
        "GET",
        &format!("/v1/artifacts/{id}/content"),
        &[("range", "bytes=-100")],
    );
    assert_eq!(r.status, 206);
    let mut gen = Noise {
        state: 0x9e3779b97f4a7c15,
        left: SIZE,
    };
    std::io::copy(&mut gen.by_ref().take(SIZE - 100), &mut std::io::sink()).unwrap();
    let mut tail = Vec::new();
    gen.read_to_end(&mut tail).unwrap();
    assert_eq!(r.body, tail);

    // The peak resident memory of this process (client and server) grew by much less than
    // the 64 MiB that went through twice: no buffer grows with the body.
    if let (Some(b), Some(a)) = (before, peak_rss_kib()) {
        let grew_mib = (a.saturating_sub(b)) / 1024;
        eprintln!("peak RSS grew by {grew_mib} MiB for a 64 MiB upload and download");
        assert!(grew_mib < 32, "peak RSS grew by {grew_mib} MiB");
    }
}
