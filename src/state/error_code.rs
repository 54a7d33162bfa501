//! An item's error code (SPEC section 5: `error_code`): the codes the daemon gives items
//! itself and the ones it acts on, as variants; any other code Tented sends, kept as it
//! came.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An item's error code. Made from text only by [`ErrorCode::parse`], so a known code is
/// always its variant, never `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Validation rejected the item (SPEC section 4).
    InvalidItem,
    /// Tented had no credits for it (admission's code, and ours at `poll.max_wait`).
    InsufficientCredits,
    /// Never sent: the operator canceled the manifest.
    Canceled,
    /// Unfinished at `poll.max_wait`.
    TimedOut,
    /// Its create request's answer never came.
    AnswerLost,
    /// Tented reported the generation failed.
    GenerationFailed,
    /// Its job answered 404 for longer than allowed, or Tented's own `NOT_FOUND` (an
    /// unknown asset, at admission).
    NotFound,
    /// Its request could not be built or sent at all.
    NotSent,
    /// Admission refused it without a code.
    Rejected,
    /// Any other code, as Tented gave it (`VALIDATION_ERROR`, …) or `HTTP_STATUS` for a
    /// refusal without one.
    Other(String),
}

impl ErrorCode {
    /// The codes with a variant, each with its word.
    const KNOWN: [(ErrorCode, &'static str); 9] = [
        (ErrorCode::InvalidItem, "INVALID_ITEM"),
        (ErrorCode::InsufficientCredits, "INSUFFICIENT_CREDITS"),
        (ErrorCode::Canceled, "CANCELED"),
        (ErrorCode::TimedOut, "TIMED_OUT"),
        (ErrorCode::AnswerLost, "ANSWER_LOST"),
        (ErrorCode::GenerationFailed, "GENERATION_FAILED"),
        (ErrorCode::NotFound, "NOT_FOUND"),
        (ErrorCode::NotSent, "NOT_SENT"),
        (ErrorCode::Rejected, "REJECTED"),
    ];

    /// The code a word names: its variant when it has one, else `Other`.
    pub fn parse(word: &str) -> ErrorCode {
        ErrorCode::KNOWN
            .into_iter()
            .find(|(_, known)| *known == word)
            .map_or_else(|| ErrorCode::Other(word.to_string()), |(code, _)| code)
    }

    /// The code as the result file, `show` and Tented write it.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Other(word) => word,
            known => ErrorCode::KNOWN
                .iter()
                .find(|(code, _)| code == known)
                .map_or("", |(_, word)| word),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As its word, in JSON and in the store alike (the item record kept the code as text:
/// the bytes stay the same).
impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ErrorCode, D::Error> {
        Ok(ErrorCode::parse(&String::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_its_word_and_back() {
        for (code, word) in ErrorCode::KNOWN {
            assert_eq!(code.as_str(), word);
            assert_eq!(ErrorCode::parse(word), code);
        }
        let other = ErrorCode::parse("VALIDATION_ERROR");
        assert_eq!(other, ErrorCode::Other("VALIDATION_ERROR".into()));
        assert_eq!(other.as_str(), "VALIDATION_ERROR");
    }

    #[test]
    fn a_code_is_stored_as_the_text_it_replaced() {
        for code in [ErrorCode::TimedOut, ErrorCode::parse("HTTP_404")] {
            let as_text = Some(code.as_str().to_string());
            let bytes = bincode::serialize(&Some(code.clone())).expect("bincode");
            assert_eq!(bytes, bincode::serialize(&as_text).expect("bincode"));
            let back: Option<ErrorCode> = bincode::deserialize(&bytes).expect("decodes");
            assert_eq!(back, Some(code.clone()));
            assert_eq!(
                serde_json::to_string(&code).expect("json"),
                format!("\"{code}\"")
            );
        }
    }
}
