//! The judgement of one manifest file, and nothing else: from what was read of it (its
//! file name, its bytes or only its size, and whether the store knows its bytes) to a
//! [`Verdict`]. No I/O, no store, no clock: the daemon's intake applies the verdict
//! (`super::batch`), and `tented-bulkd validate` prints it, so the two cannot disagree.
//!
//! The order of the rules is the daemon's: a file over the size limit is rejected for
//! its size (it is never read whole); then the file name (SPEC section 4's NAME rule);
//! then the bytes ([`validation::validate_manifest`]); then, for a manifest that passed
//! every rule, bytes identical to an earlier accepted manifest's.

use crate::manifest::{ManifestKind, ValidatedManifest, MAX_MANIFEST_BYTES};
use crate::pipeline::intake::validation::{self, ManifestRejection};

/// What was read of a manifest file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileContent {
    /// The whole file, read because it was within [`MAX_MANIFEST_BYTES`].
    Bytes(Vec<u8>),
    /// A file over [`MAX_MANIFEST_BYTES`] (see [`is_over_size_limit`]): only its size was
    /// read.
    TooLarge { size: u64 },
}

/// Whether a file of `size` bytes is over the manifest size limit, and so is judged
/// by its size alone, without being read.
pub fn is_over_size_limit(size: u64) -> bool {
    size > MAX_MANIFEST_BYTES
}

/// An earlier accepted manifest whose bytes are identical to the file's, as the store's
/// hash index names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EarlierCopy {
    /// The earlier manifest's file name (`daily.json`) and when it was received.
    Known {
        file_name: String,
        received_at_ms: u64,
    },
    /// The hash index names a manifest whose record is not in the store.
    Unrecorded,
}

/// Why a whole file is rejected. The Display text names the rule; the daemon prefixes
/// the file name (`daily.json: …`), `validate` the path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileRejection {
    #[error("the file is over {} MiB", .limit / (1024 * 1024))]
    TooLarge { size: u64, limit: u64 },
    /// The file name or the bytes break a rule of SPEC section 4.
    #[error(transparent)]
    Manifest(#[from] ManifestRejection),
    #[error("its bytes are identical to the earlier manifest `{file_name}` (received {}); sending it again would pay twice. To send it again on purpose, change anything in it", rfc3339(.received_at_ms))]
    DuplicateOf {
        file_name: String,
        received_at_ms: u64,
    },
    #[error("its bytes are identical to an earlier manifest")]
    DuplicateOfUnrecorded,
}

/// Renders a time of the store for a message.
fn rfc3339(ms: &u64) -> String {
    crate::clock::rfc3339(*ms)
}

/// What becomes of a manifest file.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every manifest-level rule holds; single items may still be rejected locally.
    Accepted {
        /// The NAME (`daily` for `daily.json`), before any `~N` suffix.
        name: String,
        manifest: ValidatedManifest,
    },
    /// The whole file is rejected: nothing of it is ever sent.
    Rejected {
        /// The NAME, or for a file name that breaks the rule, the name with every
        /// character outside the rule replaced by `_`; before any `~N` suffix.
        name: String,
        /// The `kind` the file asks for, for its result (bulk when it names none that
        /// can be read).
        kind: ManifestKind,
        reason: FileRejection,
    },
}

impl Verdict {
    /// The NAME the manifest is recorded under, before any `~N` suffix.
    pub fn name(&self) -> &str {
        match self {
            Verdict::Accepted { name, .. } | Verdict::Rejected { name, .. } => name,
        }
    }
}

/// Judges one manifest file: `file_name` as it lies in the inbox (`daily.json`), what
/// was read of it, and the earlier accepted manifest with the same bytes, if the store
/// knows one (`validate`, which has no store, gives `None`).
pub fn judge_file(
    file_name: &str,
    content: &FileContent,
    earlier: Option<&EarlierCopy>,
) -> Verdict {
    let (name, name_rejection) = judge_file_name(file_name);
    let bytes = match content {
        FileContent::TooLarge { size } => {
            return Verdict::Rejected {
                name,
                kind: ManifestKind::Bulk,
                reason: FileRejection::TooLarge {
                    size: *size,
                    limit: MAX_MANIFEST_BYTES,
                },
            }
        }
        FileContent::Bytes(bytes) => bytes.as_slice(),
    };
    let checked = match name_rejection {
        Some(rejection) => Err(rejection),
        None => validation::validate_manifest(bytes),
    };
    let reason = match checked {
        Err(rejection) => FileRejection::Manifest(rejection),
        Ok(manifest) => match earlier {
            None => return Verdict::Accepted { name, manifest },
            Some(EarlierCopy::Known {
                file_name,
                received_at_ms,
            }) => FileRejection::DuplicateOf {
                file_name: file_name.clone(),
                received_at_ms: *received_at_ms,
            },
            Some(EarlierCopy::Unrecorded) => FileRejection::DuplicateOfUnrecorded,
        },
    };
    Verdict::Rejected {
        name,
        kind: kind_hint(bytes),
        reason,
    }
}

/// The file-name step of [`judge_file`]: the NAME a file is recorded under (for a name
/// that breaks the rule, the name with every character outside it replaced by `_`) and
/// the rule it breaks, if any.
pub fn judge_file_name(file_name: &str) -> (String, Option<ManifestRejection>) {
    match validation::check_manifest_name(file_name) {
        Ok(name) => (name, None),
        Err(rejection) => (
            validation::sanitize_manifest_name(file_name),
            Some(rejection),
        ),
    }
}

/// `kind` of a manifest that failed validation, for its result file: `create` or `edit`
/// when the bytes parse as JSON (as they are: a byte order mark makes this bulk) and
/// say so, bulk otherwise.
fn kind_hint(bytes: &[u8]) -> ManifestKind {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .and_then(|k| match k.as_str() {
            "create" => Some(ManifestKind::Create),
            "edit" => Some(ManifestKind::Edit),
            _ => None,
        })
        .unwrap_or(ManifestKind::Bulk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn bytes(document: Value) -> FileContent {
        FileContent::Bytes(document.to_string().into_bytes())
    }

    fn good_bulk() -> Value {
        json!({"template_id": "tpl_1", "items": [
            {"client_item_id": "a", "input_data": {}},
            {"client_item_id": "b", "input_data": "not an object"}
        ]})
    }

    /// The verdict's parts, for a file that must be rejected.
    fn rejected(verdict: Verdict) -> (String, ManifestKind, FileRejection) {
        match verdict {
            Verdict::Rejected { name, kind, reason } => (name, kind, reason),
            Verdict::Accepted { name, .. } => panic!("`{name}` was accepted"),
        }
    }

    #[test]
    fn a_valid_file_is_accepted_under_its_name_with_its_item_rejections() {
        let verdict = judge_file("daily.json", &bytes(good_bulk()), None);
        assert_eq!(verdict.name(), "daily");
        let Verdict::Accepted { name, manifest } = verdict else {
            panic!("rejected: {verdict:?}");
        };
        assert_eq!(name, "daily");
        assert_eq!(manifest.kind, ManifestKind::Bulk);
        assert_eq!(manifest.items.len(), 2);
        assert_eq!(manifest.items[0].rejection, None);
        assert!(manifest.items[1]
            .rejection
            .as_deref()
            .is_some_and(|message| message.contains("input_data must be an object")));
        assert_eq!(
            manifest,
            validation::validate_manifest(good_bulk().to_string().as_bytes()).expect("valid")
        );
    }

    #[test]
    fn every_whole_manifest_rule_rejects_with_its_typed_reason_and_kind() {
        let item = json!({"input_data": {}});
        /// A file, the kind its rejection names, and a test of the rejection.
        type Case = (FileContent, ManifestKind, fn(&ManifestRejection) -> bool);
        let cases: Vec<Case> = vec![
            (
                FileContent::Bytes(vec![0xff, b'{', b'}']),
                ManifestKind::Bulk,
                |r| matches!(r, ManifestRejection::NotUtf8 { valid_up_to: 0 }),
            ),
            (
                FileContent::Bytes(b"{ not json".to_vec()),
                ManifestKind::Bulk,
                |r| matches!(r, ManifestRejection::NotJson { .. }),
            ),
            (bytes(json!([1, 2])), ManifestKind::Bulk, |r| {
                *r == ManifestRejection::NotAnObject { found: "an array" }
            }),
            (
                bytes(json!({"kind": "crate", "items": [item]})),
                ManifestKind::Bulk,
                |r| matches!(r, ManifestRejection::UnknownKind { kind, suggestion: Some(s) } if kind == "crate" && s == "create"),
            ),
            (
                bytes(
                    json!({"kind": "create", "defaults": {"nmae": "x"}, "items": [{"name": "n", "prompt": "p"}]}),
                ),
                ManifestKind::Create,
                |r| matches!(r, ManifestRejection::UnknownDefaultsField { field, .. } if field == "nmae"),
            ),
            (bytes(json!({"items": [item]})), ManifestKind::Bulk, |r| {
                *r == ManifestRejection::MissingTemplateId
            }),
            (
                bytes(json!({"kind": "edit", "items": []})),
                ManifestKind::Edit,
                |r| *r == ManifestRejection::NoItems,
            ),
            (
                bytes(json!({"kind": "edit", "items": [1]})),
                ManifestKind::Edit,
                |r| matches!(r, ManifestRejection::ItemNotAnObject { index: 0, .. }),
            ),
            (
                bytes(json!({"template_id": "t", "items": [
                    {"client_item_id": "x", "input_data": {}},
                    {"client_item_id": "x", "input_data": {}}]})),
                ManifestKind::Bulk,
                |r| {
                    matches!(
                        r,
                        ManifestRejection::DuplicateClientItemId {
                            first_index: 0,
                            second_index: 1,
                            ..
                        }
                    )
                },
            ),
            (
                bytes(
                    json!({"kind": "create", "items": [{"name": "n", "prompt": "p", "promt": "q"}]}),
                ),
                ManifestKind::Create,
                |r| matches!(r, ManifestRejection::UnknownItemField { index: 0, suggestion: Some(s), .. } if s == "prompt"),
            ),
        ];
        for (content, expected_kind, is_expected) in cases {
            let (name, kind, reason) = rejected(judge_file("m.json", &content, None));
            assert_eq!(name, "m");
            assert_eq!(kind, expected_kind, "{reason}");
            let FileRejection::Manifest(rejection) = &reason else {
                panic!("not a manifest rejection: {reason:?}");
            };
            assert!(
                is_expected(rejection),
                "unexpected rejection: {rejection:?}"
            );
            // The message is the rule's own, which the daemon prefixes with the file name.
            assert_eq!(reason.to_string(), rejection.to_string());
        }
    }

    #[test]
    fn a_file_over_the_limit_is_rejected_for_its_size_whatever_its_name() {
        let size = MAX_MANIFEST_BYTES + 1;
        assert!(is_over_size_limit(size) && !is_over_size_limit(MAX_MANIFEST_BYTES));
        let (name, kind, reason) = rejected(judge_file(
            "huge.json",
            &FileContent::TooLarge { size },
            None,
        ));
        assert_eq!((name.as_str(), kind), ("huge", ManifestKind::Bulk));
        assert_eq!(
            reason,
            FileRejection::TooLarge {
                size,
                limit: MAX_MANIFEST_BYTES
            }
        );
        assert_eq!(reason.to_string(), "the file is over 64 MiB");
        // The size is judged before the name, as the daemon always did.
        let (name, _, reason) = rejected(judge_file(
            "huge one!.json",
            &FileContent::TooLarge { size },
            None,
        ));
        assert_eq!(name, "huge_one_");
        assert!(matches!(reason, FileRejection::TooLarge { .. }));
    }

    #[test]
    fn a_bad_file_name_is_rejected_before_the_bytes_under_a_sanitized_name() {
        let create = json!({"kind": "create", "items": [{"name": "n", "prompt": "p"}]});
        let (name, kind, reason) = rejected(judge_file("bad name!.json", &bytes(create), None));
        assert_eq!(name, "bad_name_");
        assert_eq!(kind, ManifestKind::Create);
        assert_eq!(
            reason,
            FileRejection::Manifest(ManifestRejection::NameInvalidCharacter { character: ' ' })
        );
        let broken = FileContent::Bytes(b"{".to_vec());
        let (name, _, reason) = rejected(judge_file("daily.txt", &broken, None));
        assert_eq!(name, "daily.txt");
        assert_eq!(
            reason,
            FileRejection::Manifest(ManifestRejection::NameWithoutJsonSuffix)
        );
        assert_eq!(judge_file_name("daily.json"), ("daily".to_string(), None));
        assert_eq!(
            judge_file_name(".json"),
            ("_".to_string(), Some(ManifestRejection::NameEmpty))
        );
        let (name, _, reason) = rejected(judge_file("~2.json", &bytes(good_bulk()), None));
        assert_eq!(name, "_2");
        assert!(reason.to_string().contains("'~'"), "{reason}");
    }

    #[test]
    fn identical_bytes_of_an_earlier_manifest_reject_a_valid_file_only() {
        let earlier = EarlierCopy::Known {
            file_name: "daily.json".into(),
            received_at_ms: 1_774_449_000_000,
        };
        let (name, kind, reason) = rejected(judge_file(
            "daily.json",
            &bytes(good_bulk()),
            Some(&earlier),
        ));
        assert_eq!((name.as_str(), kind), ("daily", ManifestKind::Bulk));
        assert_eq!(
            reason.to_string(),
            "its bytes are identical to the earlier manifest `daily.json` (received 2026-03-25T14:30:00Z); sending it again would pay twice. To send it again on purpose, change anything in it"
        );
        let edit =
            json!({"kind": "edit", "items": [{"prompt": "p", "target_client_item_id": "a"}]});
        let (_, kind, reason) = rejected(judge_file(
            "again.json",
            &bytes(edit),
            Some(&EarlierCopy::Unrecorded),
        ));
        assert_eq!(kind, ManifestKind::Edit);
        assert_eq!(reason, FileRejection::DuplicateOfUnrecorded);
        assert_eq!(
            reason.to_string(),
            "its bytes are identical to an earlier manifest"
        );
        // A file that breaks a rule is rejected for that rule, not as a duplicate.
        let (_, _, reason) = rejected(judge_file(
            "daily.json",
            &bytes(json!({"items": []})),
            Some(&earlier),
        ));
        assert_eq!(
            reason,
            FileRejection::Manifest(ManifestRejection::MissingTemplateId)
        );
        let (_, _, reason) = rejected(judge_file("bad!.json", &bytes(good_bulk()), Some(&earlier)));
        assert!(matches!(
            reason,
            FileRejection::Manifest(ManifestRejection::NameInvalidCharacter { character: '!' })
        ));
    }
}
