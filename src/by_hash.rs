//! Content-first puts: a new artifact over content the store already holds, named by its hash,
//! so a client that hashes locally sends no bytes the store has (the server's
//! `POST /v1/blobs/missing` then `PUT` with a declared hash and an empty body).

use crate::artifact::{Artifact, NewArtifact};
use crate::error::{Error, Result};
use crate::ids::{ContentHash, SessionId};
use crate::store::Store;

impl Store {
    /// Stores a new artifact (or version) in `session` whose content is the stored blob `hash`.
    /// The blob is read back and verified on the way (no second copy is written: the content
    /// deduplicates onto itself). `ContentMissing` if the store holds no referenced content
    /// with this hash: content awaiting garbage collection counts as missing.
    pub fn put_existing(
        &self,
        session: SessionId,
        new: NewArtifact,
        hash: &ContentHash,
    ) -> Result<Artifact> {
        let info = self
            .content_info(hash)?
            .filter(|i| i.refs > 0)
            .ok_or(Error::ContentMissing { hash: *hash })?;
        let reader = self.open_content(hash, info.size)?;
        let a = self.put_reader(session, new, reader)?;
        debug_assert_eq!(a.hash, *hash);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use crate::{ArtifactKind, NewArtifact, NewSession, Store};

    #[test]
    fn put_existing_shares_content_and_refuses_unknown_hashes() {
        let store = Store::memory();
        let s = store.create_session(NewSession::new()).unwrap();
        let a = store
            .put(
                s.id,
                NewArtifact::new(ArtifactKind::ToolResult, "a"),
                b"same bytes",
            )
            .unwrap();
        let b = store
            .put_existing(
                s.id,
                NewArtifact::new(ArtifactKind::ToolResult, "b"),
                &a.hash,
            )
            .unwrap();
        assert_eq!(b.hash, a.hash);
        assert_eq!(b.name, "b");
        assert_eq!(store.read(s.id, b.id).unwrap(), b"same bytes");
        assert_eq!(store.content_info(&a.hash).unwrap().unwrap().refs, 2);
        let other = crate::ContentHash::of(b"never stored");
        let e = store
            .put_existing(
                s.id,
                NewArtifact::new(ArtifactKind::ToolResult, "c"),
                &other,
            )
            .unwrap_err();
        assert_eq!(e.code(), "content_missing");
    }
}
