//! `cairn serve --metadata postgres://... --content s3://bucket/prefix`: two servers on one
//! PostgreSQL and one bucket (moto, started on 127.0.0.1 by the tests): content put through one
//! is stored once as an object and reads back, verified, from the other.
#![cfg(all(feature = "postgres", feature = "s3"))]

use crate::common;
use crate::pg;
use crate::s3;

use std::time::Duration;

use cairn_server::state::tenant_namespace;
use cairn_server::ServerConfig;
use common::TestServer;
use serde_json::json;

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn two_servers_share_content_on_one_bucket() {
    let Some(url) = pg::url() else { return };
    let Some(ep) = s3::endpoint() else { return };
    let ns = tenant_namespace("default");
    cairn::PostgresBackend::connect(&url, &ns)
        .unwrap()
        .drop_namespace()
        .unwrap();
    let prefix = format!("srv{}", std::process::id());
    let content = cairn::S3Config::new(s3::BUCKET, &prefix)
        .endpoint(&ep)
        .credentials("testing", "testing")
        .gc_grace(Duration::from_secs(3600));
    let servers: Vec<TestServer> = (0..2)
        .map(|_| {
            TestServer::start_with(|c| {
                c.metadata = Some(url.clone());
                c.content = Some(content.clone());
            })
        })
        .collect();
    let s = servers[0].anon().session(&json!({"name": "shared"}));
    // Above the 64 KiB inline threshold and incompressible: an object each.
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| noise(100_000, i)).collect();
    let mut ids = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let a = servers[i % 2].anon().put(&s, &format!("f{i}.bin"), b);
        ids.push(a["id"].as_str().unwrap().to_string());
    }
    // The same content again through the other server: deduplicated, no new object.
    servers[1].anon().put(&s, "again.bin", &bodies[0]);
    let keys = s3::list_keys(&ep, &format!("{prefix}/{ns}/blobs/"));
    assert_eq!(keys.len(), 4, "{keys:?}");
    for (i, id) in ids.iter().enumerate() {
        let r = servers[(i + 1) % 2]
            .anon()
            .get(&format!("/v1/artifacts/{id}/content"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, bodies[i]);
    }
}

#[test]
fn content_on_s3_without_postgres_metadata_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ServerConfig::new(dir.path());
    c.content = Some(cairn::S3Config::new("b", "p"));
    let e = cairn_server::spawn(c).err().unwrap();
    assert!(e.contains("--metadata"), "{e}");
}
