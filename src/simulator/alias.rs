//! The custom page alias rules shared by POST /v1/tents, POST /v1/tents/bulk and
//! POST /v1/tents/{tentId}/edit, each rule implemented on its own as the pages list them.

/// Maximum length of an alias, in characters.
pub const MAX_ALIAS_LEN: usize = 100;

/// Words that may not be used as an alias. The pages say "reserved words such as api,
/// admin, submit, or assets": the simulator reserves exactly these four.
pub const RESERVED_ALIASES: [&str; 4] = ["api", "admin", "submit", "assets"];

/// The alias that publishes at the domain root.
pub const ROOT_ALIAS: &str = "/";

/// Why an alias is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasError {
    Empty,
    TooLong,
    InvalidCharacter,
    InvalidFirstCharacter,
    LooksLikeUuid,
    Reserved,
}

/// Checks one requested alias against every documented rule.
pub fn validate_alias(alias: &str) -> Result<(), AliasError> {
    if alias == ROOT_ALIAS {
        return Ok(());
    }
    if alias.is_empty() {
        return Err(AliasError::Empty);
    }
    if alias.chars().count() > MAX_ALIAS_LEN {
        return Err(AliasError::TooLong);
    }
    if !alias.chars().all(is_alias_char) {
        return Err(AliasError::InvalidCharacter);
    }
    if !alias
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(AliasError::InvalidFirstCharacter);
    }
    if is_hyphenated_uuid(alias) {
        return Err(AliasError::LooksLikeUuid);
    }
    if RESERVED_ALIASES.contains(&alias) {
        return Err(AliasError::Reserved);
    }
    Ok(())
}

fn is_alias_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
}

/// True for the canonical 8-4-4-4-12 hexadecimal form, the form of default tent paths.
fn is_hyphenated_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8usize, 4, 4, 4, 12];
    groups.len() == lens.len()
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(validate_alias("/"), Ok(()));
        assert_eq!(validate_alias("spring-launch"), Ok(()));
        assert_eq!(validate_alias("a.b_c-9"), Ok(()));
        assert_eq!(validate_alias("9lives"), Ok(()));
        assert_eq!(validate_alias(&"a".repeat(100)), Ok(()));
        assert_eq!(validate_alias(&"a".repeat(101)), Err(AliasError::TooLong));
        assert_eq!(validate_alias(""), Err(AliasError::Empty));
        assert_eq!(validate_alias("Spring"), Err(AliasError::InvalidCharacter));
        assert_eq!(validate_alias("a/b"), Err(AliasError::InvalidCharacter));
        assert_eq!(validate_alias("a b"), Err(AliasError::InvalidCharacter));
        assert_eq!(validate_alias("-a"), Err(AliasError::InvalidFirstCharacter));
        assert_eq!(validate_alias(".a"), Err(AliasError::InvalidFirstCharacter));
        assert_eq!(validate_alias("_a"), Err(AliasError::InvalidFirstCharacter));
        assert_eq!(
            validate_alias("f11ef3cf-8664-4fe5-a261-c5b4d647b7d1"),
            Err(AliasError::LooksLikeUuid)
        );
        for w in RESERVED_ALIASES {
            assert_eq!(validate_alias(w), Err(AliasError::Reserved));
        }
        assert_eq!(validate_alias("api-docs"), Ok(()));
    }
}
