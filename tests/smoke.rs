mod common;
use cairn::*;

#[test]
fn smoke() {
    for kind in common::backends() {
        let (s, _d) = common::store(kind, Config::default());
        let sess = s.create_session(NewSession::new().name("x")).unwrap();
        let a = s.put(sess.id, NewArtifact::new(ArtifactKind::ToolResult, "a.txt"), b"hi").unwrap();
        assert_eq!(s.read(sess.id, a.id).unwrap(), b"hi");
        let big = common::json_text(200_000, 1);
        let b = s.put(sess.id, NewArtifact::new(ArtifactKind::ToolResult, "b.json"), &big).unwrap();
        assert!(b.compressed);
        assert_eq!(s.read(sess.id, b.id).unwrap(), big);
        let huge = common::random_bytes(9 << 20, 3);
        let c = s.put_reader(sess.id, NewArtifact::new(ArtifactKind::ToolResult, "c.bin"), &huge[..]).unwrap();
        assert!(!c.compressed);
        assert_eq!(s.read(sess.id, c.id).unwrap(), huge);
        let q = s.query(&Query::new().name_glob("*.json")).unwrap();
        assert_eq!(q.items.len(), 1);
        let st = s.stats().unwrap();
        assert_eq!(st.artifacts, 3);
        assert_eq!(st.blobs, 3);
    }
}
