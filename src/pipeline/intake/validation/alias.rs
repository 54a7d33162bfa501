//! The documented alias rules (create-tent.md, "Alias rules") that a `custom_page_alias`
//! must follow.

/// Words that an alias may not be. The API pages list these "such as", so the list may
/// grow; it lives in this one place.
pub const RESERVED_ALIAS_WORDS: &[&str] = &["api", "admin", "submit", "assets"];

/// The longest alias the API accepts, in characters.
pub const MAX_ALIAS_CHARS: usize = 100;

/// The alias that publishes at the domain root.
pub const ROOT_ALIAS: &str = "/";

/// Which documented alias rule an alias breaks (create-tent.md, "Alias rules").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasRuleError {
    #[error("the alias is empty (use `/` to publish at the domain root)")]
    Empty,
    #[error("the alias has {length} characters; at most {MAX_ALIAS_CHARS} are allowed")]
    TooLong { length: usize },
    #[error("the alias contains {character:?} at position {position}; only lowercase letters, digits, `-`, `_` and `.` are allowed")]
    InvalidCharacter { character: char, position: usize },
    #[error(
        "the alias starts with {character:?}; it must start with a lowercase letter or a digit"
    )]
    BadFirstCharacter { character: char },
    #[error("the alias is a UUID, which is not allowed")]
    IsUuid,
    #[error("`{word}` is a reserved word and cannot be used as an alias")]
    ReservedWord { word: String },
}

/// Checks a `custom_page_alias` against the documented alias rules.
pub fn validate_alias(alias: &str) -> Result<(), AliasRuleError> {
    if alias == ROOT_ALIAS {
        return Ok(());
    }
    let Some(first) = alias.chars().next() else {
        return Err(AliasRuleError::Empty);
    };
    let length = alias.chars().count();
    if length > MAX_ALIAS_CHARS {
        return Err(AliasRuleError::TooLong { length });
    }
    let allowed = |character: char| {
        character.is_ascii_lowercase()
            || character.is_ascii_digit()
            || matches!(character, '-' | '_' | '.')
    };
    if let Some((position, character)) = alias
        .chars()
        .enumerate()
        .find(|(_, character)| !allowed(*character))
    {
        return Err(AliasRuleError::InvalidCharacter {
            character,
            position,
        });
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(AliasRuleError::BadFirstCharacter { character: first });
    }
    if uuid::Uuid::try_parse(alias).is_ok() {
        return Err(AliasRuleError::IsUuid);
    }
    if let Some(word) = RESERVED_ALIAS_WORDS.iter().find(|word| **word == alias) {
        return Err(AliasRuleError::ReservedWord {
            word: (*word).to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_rules_each_accept_and_refuse() {
        use AliasRuleError::*;
        let invalid = |character, position| InvalidCharacter {
            character,
            position,
        };
        let bad_first = |character| BadFirstCharacter { character };
        let cases = [
            ("acme-onboarding_jane.v2".to_owned(), Ok(())),
            ("/".to_owned(), Ok(())),
            (String::new(), Err(Empty)),
            ("a".repeat(100), Ok(())),
            ("a".repeat(101), Err(TooLong { length: 101 })),
            ("abc".to_owned(), Ok(())),
            ("aBc".to_owned(), Err(invalid('B', 1))),
            ("a/b".to_owned(), Err(invalid('/', 1))),
            ("a b".to_owned(), Err(invalid(' ', 1))),
            ("é".to_owned(), Err(invalid('é', 0))),
            ("9lives".to_owned(), Ok(())),
            ("-x".to_owned(), Err(bad_first('-'))),
            (".x".to_owned(), Err(bad_first('.'))),
            ("_x".to_owned(), Err(bad_first('_'))),
            ("f11ef3cf-8664-4fe5-a261-c5b4d647b7d".to_owned(), Ok(())),
            (
                "f11ef3cf-8664-4fe5-a261-c5b4d647b7d1".to_owned(),
                Err(IsUuid),
            ),
            ("f11ef3cf86644fe5a261c5b4d647b7d1".to_owned(), Err(IsUuid)),
            ("api-docs".to_owned(), Ok(())),
        ];
        for (alias, expected) in cases {
            assert_eq!(validate_alias(&alias), expected, "{alias:?}");
        }
        for word in RESERVED_ALIAS_WORDS {
            let word = (*word).to_owned();
            assert_eq!(validate_alias(&word), Err(ReservedWord { word }));
        }
        assert_eq!(
            ReservedWord { word: "api".into() }.to_string(),
            "`api` is a reserved word and cannot be used as an alias"
        );
    }
}
