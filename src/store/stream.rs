//! The record stream: every record of the store's tree in key order, each framed as
//! `key length u32 BE, key, value length u32 BE, value`. A backup's body
//! ([`super::backup`]) and a compaction's spool ([`super::compaction`]) are this stream;
//! a restore and a compaction's fill read it back into a tree.

use std::io::{Read, Write};
use std::path::Path;

use super::StoreError;

/// The longest key or value a stream may hold (a record is far smaller; a larger length
/// means a damaged file, not a reason to allocate gigabytes).
const MAX_RECORD_PART: u32 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("store: {0}")]
    Store(#[from] sled::Error),
    #[error("{0}")]
    Write(#[source] std::io::Error),
    #[error("a record over 4 GiB")]
    TooLarge,
    #[error("a record is cut short: {0}")]
    CutShort(#[source] std::io::Error),
    #[error("a record claims {0} bytes")]
    Claims(u32),
}

impl StreamError {
    /// As a store error about the file at `path` (a compaction's spool).
    pub(super) fn at(self, path: &Path) -> StoreError {
        let source = match self {
            StreamError::Store(e) => return StoreError::Sled(e),
            StreamError::Write(e) | StreamError::CutShort(e) => e,
            other => std::io::Error::other(other.to_string()),
        };
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Writes every record of `tree` into `out`, in key order; returns how many.
pub(super) fn write_records(tree: &sled::Tree, out: &mut impl Write) -> Result<u64, StreamError> {
    let mut records = 0u64;
    for entry in tree.iter() {
        let (key, value) = entry?;
        for part in [&key[..], &value[..]] {
            let len = u32::try_from(part.len()).map_err(|_| StreamError::TooLarge)?;
            out.write_all(&len.to_be_bytes())
                .map_err(StreamError::Write)?;
            out.write_all(part).map_err(StreamError::Write)?;
        }
        records += 1;
    }
    Ok(records)
}

/// Reads the next record (key, value).
pub(super) fn read_record(input: &mut impl Read) -> Result<(Vec<u8>, Vec<u8>), StreamError> {
    let key = read_part(input)?;
    let value = read_part(input)?;
    Ok((key, value))
}

fn read_part(input: &mut impl Read) -> Result<Vec<u8>, StreamError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(StreamError::CutShort)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_RECORD_PART {
        return Err(StreamError::Claims(len));
    }
    let mut part = vec![0u8; len as usize];
    input.read_exact(&mut part).map_err(StreamError::CutShort)?;
    Ok(part)
}

/// Reads `records` records from `input` into `tree`, `batch` records to a sled batch.
/// Nothing is synced: the caller makes the tree durable.
pub(super) fn fill_tree(
    tree: &sled::Tree,
    input: &mut impl Read,
    records: u64,
    batch: usize,
) -> Result<(), StreamError> {
    let mut pending = sled::Batch::default();
    let mut in_batch = 0;
    for _ in 0..records {
        let (key, value) = read_record(input)?;
        pending.insert(key, value);
        in_batch += 1;
        if in_batch == batch {
            tree.apply_batch(std::mem::take(&mut pending))?;
            in_batch = 0;
        }
    }
    tree.apply_batch(pending)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_read_back_from_its_stream_is_the_same_and_a_cut_one_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .temporary(true)
            .path(dir.path().join("a"))
            .open()
            .expect("opens");
        let from = db.open_tree("a").expect("tree");
        for i in 0..2_500u32 {
            from.insert(i.to_be_bytes(), vec![i as u8; (i % 7) as usize])
                .expect("insert");
        }
        let mut stream = Vec::new();
        assert_eq!(write_records(&from, &mut stream).expect("writes"), 2_500);
        let to = db.open_tree("b").expect("tree");
        fill_tree(&to, &mut &stream[..], 2_500, 1_000).expect("fills");
        let all = |tree: &sled::Tree| -> Vec<_> { tree.iter().flatten().collect() };
        assert_eq!(all(&to), all(&from));

        let cut = &stream[..stream.len() - 1];
        let third = db.open_tree("c").expect("tree");
        assert!(matches!(
            fill_tree(&third, &mut &cut[..], 2_500, 1_000),
            Err(StreamError::CutShort(_))
        ));
        let huge = (MAX_RECORD_PART + 1).to_be_bytes();
        assert!(matches!(
            read_record(&mut &huge[..]),
            Err(StreamError::Claims(_))
        ));
    }
}
