//! A manifest file's name: the rule its NAME follows, and a best-effort NAME for a file
//! that breaks it.

use crate::manifest::{MANIFEST_SUFFIX, MAX_MANIFEST_NAME_CHARS};

use super::rejection::ManifestRejection;

/// Checks a manifest file name (`daily.json`) and returns its NAME (`daily`).
pub fn check_manifest_name(file_name: &str) -> Result<String, ManifestRejection> {
    let name = file_name
        .strip_suffix(MANIFEST_SUFFIX)
        .ok_or(ManifestRejection::NameWithoutJsonSuffix)?;
    if name.is_empty() {
        return Err(ManifestRejection::NameEmpty);
    }
    let length = name.chars().count();
    if length > MAX_MANIFEST_NAME_CHARS {
        return Err(ManifestRejection::NameTooLong { length });
    }
    if let Some(character) = name
        .chars()
        .find(|character| !is_manifest_name_char(*character))
    {
        return Err(ManifestRejection::NameInvalidCharacter { character });
    }
    Ok(name.to_owned())
}

/// Makes a best-effort NAME for a file whose name breaks the naming rule, so that its
/// rejected result file can still be named: the `.json` suffix is dropped when present,
/// every character outside the rule becomes `_`, the result is cut to 200 characters,
/// and it is never empty.
pub fn sanitize_manifest_name(file_name: &str) -> String {
    let stem = file_name.strip_suffix(MANIFEST_SUFFIX).unwrap_or(file_name);
    let mut name: String = stem
        .chars()
        .map(|character| {
            if is_manifest_name_char(character) {
                character
            } else {
                '_'
            }
        })
        .take(MAX_MANIFEST_NAME_CHARS)
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    name
}

/// Whether a character may appear in a manifest NAME.
fn is_manifest_name_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '.' | '-' | '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_follow_the_rule() {
        use ManifestRejection::*;
        let cases = [
            ("daily.json".to_owned(), Ok("daily")),
            ("Daily_2026-03.v2.json".to_owned(), Ok("Daily_2026-03.v2")),
            ("daily.txt".to_owned(), Err(NameWithoutJsonSuffix)),
            ("daily.JSON".to_owned(), Err(NameWithoutJsonSuffix)),
            (".json".to_owned(), Err(NameEmpty)),
            (
                format!("{}.json", "a".repeat(201)),
                Err(NameTooLong { length: 201 }),
            ),
            (
                "dai ly.json".to_owned(),
                Err(NameInvalidCharacter { character: ' ' }),
            ),
            (
                "daily~2.json".to_owned(),
                Err(NameInvalidCharacter { character: '~' }),
            ),
            (
                "é.json".to_owned(),
                Err(NameInvalidCharacter { character: 'é' }),
            ),
        ];
        for (file_name, expected) in cases {
            let expected = expected.map(str::to_owned);
            assert_eq!(check_manifest_name(&file_name), expected, "{file_name:?}");
        }
        let longest = format!("{}.json", "a".repeat(200));
        assert!(check_manifest_name(&longest).is_ok());
    }

    #[test]
    fn sanitized_names_always_follow_the_rule() {
        assert_eq!(sanitize_manifest_name("daily.json"), "daily");
        assert_eq!(sanitize_manifest_name("dai ly~2.json"), "dai_ly_2");
        assert_eq!(sanitize_manifest_name("notes.txt"), "notes.txt");
        assert_eq!(sanitize_manifest_name(".json"), "_");
        assert_eq!(sanitize_manifest_name(""), "_");
        assert_eq!(sanitize_manifest_name("été.json"), "_t_");
        let long = sanitize_manifest_name(&format!("{}.json", "é".repeat(300)));
        assert_eq!(long.len(), 200);
        for file_name in ["dai ly~2.json", "été.json", ".json", "x/y.json"] {
            let name = sanitize_manifest_name(file_name);
            assert_eq!(check_manifest_name(&format!("{name}.json")), Ok(name));
        }
    }
}
