//! The store's format: the `V` mark, and the frame for a future migration.
//!
//! Format 3 (manifests and items with typed fields, a new manifest's items in intake
//! blocks `F`, its client ids in buckets `K`) is the baseline of the first release. The
//! formats before it were written only by development builds and carried no mark; a store
//! of theirs is refused, as is a store marked with a format this binary does not know
//! (a newer one). Either is left untouched.
//!
//! A fresh store is one whose tree holds nothing at all: it is marked when it is first
//! opened, before anything else is written, so a store with records and no mark can only
//! be an older one. A later format will migrate here, between the mark's reading and the
//! first other read, and then write its own mark.

use std::path::Path;

use super::{read_u64, Store, StoreError};

/// The store's format: 3 since items are kept in intake blocks (`F`) and client ids in
/// buckets (`K`).
pub const STORE_FORMAT: u64 = 3;

/// `V`: the store's format (u64).
pub(crate) const FORMAT_KEY: &[u8] = b"V";

/// The format a store or a backup was found in, when it is not [`STORE_FORMAT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoundFormat {
    /// Records without a `V` mark: formats 1 and 2 wrote none.
    Unmarked,
    Marked(u64),
}

impl std::fmt::Display for FoundFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FoundFormat::Unmarked => write!(f, "1 or 2 (records without a format mark)"),
            FoundFormat::Marked(n) => write!(f, "{n}"),
        }
    }
}

/// What the mark says of a store (or a backup).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Judged {
    /// Marked [`STORE_FORMAT`]: read as it is.
    Current,
    /// Nothing in it yet: marked now.
    Fresh,
    Older(FoundFormat),
    Newer(u64),
    /// A mark that is not a number.
    Unreadable,
}

/// Judges a store's format from its mark (the value of `V`, if any) and whether it holds
/// any record at all.
pub(super) fn judge(mark: Option<&[u8]>, has_records: bool) -> Judged {
    match mark.map(|bytes| (bytes.len() == 8).then(|| read_u64(bytes)).flatten()) {
        None if has_records => Judged::Older(FoundFormat::Unmarked),
        None => Judged::Fresh,
        Some(None) => Judged::Unreadable,
        Some(Some(STORE_FORMAT)) => Judged::Current,
        Some(Some(found)) if found > STORE_FORMAT => Judged::Newer(found),
        Some(Some(found)) => Judged::Older(FoundFormat::Marked(found)),
    }
}

impl Store {
    /// Refuses a store of any other format than [`STORE_FORMAT`] (older or newer), and
    /// marks a fresh one. Reads one key, and the first of the tree: no scan.
    pub(super) fn check_format(&self, path: &Path) -> Result<(), StoreError> {
        let mark = self.tree.get(FORMAT_KEY)?;
        let has_records = match &mark {
            Some(_) => true,
            None => !self.tree.is_empty(),
        };
        match judge(mark.as_deref(), has_records) {
            Judged::Current => Ok(()),
            Judged::Fresh => {
                self.tree
                    .insert(FORMAT_KEY, &STORE_FORMAT.to_be_bytes()[..])?;
                self.sync_blocking()
            }
            Judged::Older(found) => Err(StoreError::Older {
                path: path.to_path_buf(),
                found,
                supported: STORE_FORMAT,
            }),
            Judged::Newer(found) => Err(StoreError::Newer {
                path: path.to_path_buf(),
                found,
                supported: STORE_FORMAT,
            }),
            Judged::Unreadable => Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: "its format mark `V` is not a number".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{records_for_test as records, reopen};

    #[test]
    fn a_mark_is_judged_by_its_number_and_no_mark_by_whether_there_are_records() {
        let mark = |n: u64| n.to_be_bytes().to_vec();
        assert_eq!(judge(Some(&mark(3)), true), Judged::Current);
        assert_eq!(judge(None, false), Judged::Fresh);
        assert_eq!(
            judge(None, true),
            Judged::Older(FoundFormat::Unmarked),
            "formats 1 and 2 had no mark"
        );
        assert_eq!(
            judge(Some(&mark(2)), true),
            Judged::Older(FoundFormat::Marked(2))
        );
        assert_eq!(judge(Some(&mark(4)), true), Judged::Newer(4));
        assert_eq!(judge(Some(b"3"), true), Judged::Unreadable);
    }

    /// A store with a manifest's records, flushed and closed; `mark` then replaces its
    /// `V` (`None`: removed, as formats 1 and 2 had it).
    async fn store_marked(dir: &Path, mark: Option<u64>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let store = Store::open(dir).expect("open");
        assert_eq!(
            store.tree.get(FORMAT_KEY).expect("read").as_deref(),
            Some(&STORE_FORMAT.to_be_bytes()[..]),
            "a fresh store is marked when it opens"
        );
        let id = store.new_manifest_id().expect("id");
        let writer = store.writer().await;
        let mut txn = writer
            .create(crate::store::received_for_test(id, "old", 1))
            .expect("create");
        txn.index_name();
        txn.insert_item(crate::store::test_item(id, 0))
            .expect("insert");
        txn.commit().await.expect("commit");
        match mark {
            Some(n) => store.tree.insert(FORMAT_KEY, &n.to_be_bytes()[..]),
            None => store.tree.remove(FORMAT_KEY),
        }
        .expect("write");
        store.db.flush().expect("flush");
        records(&store)
    }

    /// Opening the raw sled files again: what the refusals left.
    fn raw_records(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        let db = crate::store::when_unlocked(|| crate::store::open_sled(dir)).expect("opens");
        let tree = db.open_tree(crate::store::TREE).expect("tree");
        crate::store::tree_records_for_test(&tree)
    }

    #[tokio::test]
    async fn a_store_of_an_older_format_is_refused_untouched_naming_its_folder_and_format() {
        for (mark, said) in [
            (None, "store format 1 or 2 (records without a format mark)"),
            (Some(2), "store format 2,"),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let before = store_marked(dir.path(), mark).await;
            let refused = reopen(dir.path()).err();
            assert!(
                matches!(refused, Some(StoreError::Older { .. })),
                "{refused:?}"
            );
            let message = refused.map(|e| e.to_string()).unwrap_or_default();
            for needed in [
                &dir.path().display().to_string(),
                said,
                "reads format 3 only",
                "left untouched",
            ] {
                assert!(message.contains(needed), "`{needed}` in: {message}");
            }
            assert!(
                StoreError::Older {
                    path: dir.path().into(),
                    found: FoundFormat::Unmarked,
                    supported: STORE_FORMAT
                }
                .needs_an_operator(),
                "exit 78: no restart"
            );
            assert_eq!(raw_records(dir.path()), before, "nothing was rewritten");
        }
    }

    #[tokio::test]
    async fn a_store_of_a_newer_format_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let before = store_marked(dir.path(), Some(STORE_FORMAT + 1)).await;
        let refused = reopen(dir.path()).err().map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(|e| e.contains(&format!(
                "the store at {} was written by a newer tented-bulkd (store format 4; this one reads up to 3)",
                dir.path().display()
            ))),
            "{refused:?}"
        );
        assert_eq!(raw_records(dir.path()), before, "nothing was rewritten");
        assert!(matches!(
            reopen(dir.path()),
            Err(StoreError::Newer { found: 4, .. })
        ));
    }

    #[tokio::test]
    async fn a_store_of_the_current_format_opens_as_it_is() {
        let dir = tempfile::tempdir().expect("temp dir");
        let before = store_marked(dir.path(), Some(STORE_FORMAT)).await;
        let store = reopen(dir.path()).expect("reopens");
        assert_eq!(records(&store), before);
    }
}
