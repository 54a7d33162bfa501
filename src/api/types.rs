//! The request and response bodies of the five Tented endpoints, as the pages in
//! `shared/api/` describe them.
//!
//! Parsing is lenient where the pages are vague: unknown fields are ignored, status
//! strings are kept as strings and interpreted by [`GenerationStatus`] and
//! [`PublicationStatus`] (unknown values are "not final yet"), and `credits` stays raw JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/tents/bulk`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BulkCreateRequest {
    pub template_id: String,
    pub items: Vec<BulkItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_job_descriptor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_tent_name_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_index: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_publish: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// One item of a bulk request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BulkItem {
    pub input_data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_item_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tent_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_page_alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_brand: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_ids: Option<Vec<String>>,
}

/// The 202 answer of `POST /v1/tents/bulk`.
#[derive(Clone, Debug, Deserialize)]
pub struct BulkCreateResponse {
    pub bulk_job_id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub accepted_count: Option<u64>,
    #[serde(default)]
    pub rejected_count: Option<u64>,
    #[serde(default)]
    pub items: Vec<BulkAdmissionItem>,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// One item's admission result.
#[derive(Clone, Debug, Deserialize)]
pub struct BulkAdmissionItem {
    pub index: u32,
    #[serde(default)]
    pub client_item_id: Option<String>,
    #[serde(default)]
    pub tent_id: Option<String>,
    #[serde(default)]
    pub tent_name: Option<String>,
    #[serde(default)]
    pub custom_page_alias: Option<String>,
    pub status: String,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// What an item's admission answer says, read conservatively: only an explicit refusal is
/// a refusal (anything else might have been admitted and must never be resent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Accepted { tent_id: String },
    Refused,
    Unclear,
}

impl BulkAdmissionItem {
    pub fn is_accepted(&self) -> bool {
        matches!(self.admission(), Admission::Accepted { .. })
    }

    pub fn admission(&self) -> Admission {
        match (&self.tent_id, self.status.as_str()) {
            (Some(tent_id), _) if !tent_id.is_empty() && self.status != "rejected" => {
                Admission::Accepted {
                    tent_id: tent_id.clone(),
                }
            }
            (_, "rejected") => Admission::Refused,
            (None, _) if self.error_code.is_some() && self.status != "accepted" => {
                Admission::Refused
            }
            _ => Admission::Unclear,
        }
    }
}

/// The answer of `GET /v1/bulk-jobs/{bulkJobId}`.
#[derive(Clone, Debug, Deserialize)]
pub struct BulkJobStatus {
    pub bulk_job_id: String,
    pub status: String,
    #[serde(default)]
    pub template_id: Option<String>,
    #[serde(default)]
    pub auto_publish: Option<bool>,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub queued: Option<u64>,
    #[serde(default)]
    pub generating: Option<u64>,
    #[serde(default)]
    pub completed: Option<u64>,
    #[serde(default)]
    pub failed: Option<u64>,
    #[serde(default)]
    pub items: Vec<BulkJobItem>,
    /// Undocumented shape: kept as raw JSON.
    #[serde(default)]
    pub credits: Option<Value>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// One item of a bulk job's status.
#[derive(Clone, Debug, Deserialize)]
pub struct BulkJobItem {
    pub index: u32,
    #[serde(default)]
    pub client_item_id: Option<String>,
    #[serde(default)]
    pub tent_id: Option<String>,
    #[serde(default)]
    pub tent_name: Option<String>,
    pub status: GenerationStatus,
    #[serde(default)]
    pub publication_status: Option<PublicationStatus>,
    #[serde(default)]
    pub published_url: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// `POST /v1/tents`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CreateTentRequest {
    pub name: String,
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_brand: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_publish: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_page_alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_ids: Option<Vec<String>>,
}

/// The 202 answer of `POST /v1/tents`.
#[derive(Clone, Debug, Deserialize)]
pub struct CreateTentResponse {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `POST /v1/tents/{tentId}/edit`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EditTentRequest {
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_brand: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_publish: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_page_alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_ids: Option<Vec<String>>,
}

/// The 202 answer of `POST /v1/tents/{tentId}/edit`.
#[derive(Clone, Debug, Deserialize)]
pub struct EditTentResponse {
    pub id: String,
    #[serde(default)]
    pub generation_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// The answer of `GET /v1/tents/{tentId}`.
#[derive(Clone, Debug, Deserialize)]
pub struct TentStatus {
    pub id: String,
    pub status: GenerationStatus,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub result: Option<Value>,
    /// A string on the page; kept as JSON in case it is an object elsewhere.
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default)]
    pub publication: Option<Publication>,
}

impl TentStatus {
    /// The failure reason as text, whatever shape `error` has.
    pub fn error_text(&self) -> Option<String> {
        self.error.as_ref().map(|e| match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// The publication object of a tent.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Publication {
    pub status: PublicationStatus,
    #[serde(default)]
    pub published_url: Option<String>,
    #[serde(default)]
    pub requested_custom_page_alias: Option<String>,
    #[serde(default)]
    pub applied_custom_page_alias: Option<String>,
    #[serde(default)]
    pub warnings: Vec<Notice>,
    #[serde(default)]
    pub error: Option<Notice>,
}

/// A warning or an error with Tented's `code` and `message`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Notice {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The body of an error answer. The pages show several shapes
/// (`{"error"}`, `{"error","message","code"}`, `{"error","details":{"issues":[..]}}`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ApiErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub details: Option<Value>,
}

impl ApiErrorBody {
    /// One line for logs and result files: the most specific text the answer carried.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(error) = &self.error {
            parts.push(error.clone());
        }
        if let Some(message) = &self.message {
            parts.push(message.clone());
        }
        if let Some(issues) = self
            .details
            .as_ref()
            .and_then(|d| d.get("issues"))
            .and_then(|i| i.as_array())
        {
            for issue in issues {
                if let Some(message) = issue.get("message").and_then(|m| m.as_str()) {
                    parts.push(message.to_string());
                }
            }
        }
        if parts.is_empty() {
            "no message".to_string()
        } else {
            parts.join(": ")
        }
    }
}

/// A generation's status (tent status and bulk item status share these words). On the
/// wire and in the store it is the word itself, so a word Tented adds later is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenerationStatus {
    Queued,
    Generating,
    Completed,
    Failed,
    /// `rejected` appears only for bulk items that admission refused.
    Rejected,
    /// Anything else, e.g. `pending` from create and edit answers: not final yet.
    Other(String),
}

impl GenerationStatus {
    pub fn parse(s: &str) -> GenerationStatus {
        match s {
            "queued" => GenerationStatus::Queued,
            "generating" => GenerationStatus::Generating,
            "completed" => GenerationStatus::Completed,
            "failed" => GenerationStatus::Failed,
            "rejected" => GenerationStatus::Rejected,
            other => GenerationStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            GenerationStatus::Queued => "queued",
            GenerationStatus::Generating => "generating",
            GenerationStatus::Completed => "completed",
            GenerationStatus::Failed => "failed",
            GenerationStatus::Rejected => "rejected",
            GenerationStatus::Other(word) => word,
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            GenerationStatus::Completed | GenerationStatus::Failed | GenerationStatus::Rejected
        )
    }
}

/// A publication's lifecycle state; the word itself on the wire and in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicationStatus {
    Pending,
    Published,
    PublishedWithWarnings,
    Failed,
    /// Unknown words are treated as "not final yet".
    Other(String),
}

impl PublicationStatus {
    pub fn parse(s: &str) -> PublicationStatus {
        match s {
            "pending" => PublicationStatus::Pending,
            "published" => PublicationStatus::Published,
            "published_with_warnings" => PublicationStatus::PublishedWithWarnings,
            "failed" => PublicationStatus::Failed,
            other => PublicationStatus::Other(other.to_string()),
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            PublicationStatus::Published
                | PublicationStatus::PublishedWithWarnings
                | PublicationStatus::Failed
        )
    }

    pub fn as_str(&self) -> &str {
        match self {
            PublicationStatus::Pending => "pending",
            PublicationStatus::Published => "published",
            PublicationStatus::PublishedWithWarnings => "published_with_warnings",
            PublicationStatus::Failed => "failed",
            PublicationStatus::Other(word) => word,
        }
    }

    /// Warnings and errors appear only in `GET /v1/tents/{id}`: these states need that call.
    pub fn needs_details(&self) -> bool {
        matches!(
            self,
            PublicationStatus::PublishedWithWarnings | PublicationStatus::Failed
        )
    }
}

/// Status words travel as the words themselves (JSON and bincode alike), parsed on the
/// way in so that the daemon compares enums, never strings.
macro_rules! status_word_serde {
    ($status:ty) => {
        impl Serialize for $status {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $status {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let word = String::deserialize(deserializer)?;
                Ok(<$status>::parse(&word))
            }
        }

        impl std::fmt::Display for $status {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl From<&str> for $status {
            fn from(word: &str) -> Self {
                <$status>::parse(word)
            }
        }

        impl PartialEq<&str> for $status {
            fn eq(&self, word: &&str) -> bool {
                self.as_str() == *word
            }
        }
    };
}

status_word_serde!(GenerationStatus);
status_word_serde!(PublicationStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_round_trip_and_unknown_words_are_kept() {
        for word in [
            "queued",
            "generating",
            "completed",
            "failed",
            "rejected",
            "pending",
            "archived",
        ] {
            let status: GenerationStatus =
                serde_json::from_value(serde_json::json!(word)).expect("a word");
            assert_eq!(status.as_str(), word);
            assert_eq!(
                serde_json::to_value(&status).expect("json"),
                serde_json::json!(word)
            );
            let stored = bincode::serialize(&status).expect("bincode");
            assert_eq!(
                stored,
                bincode::serialize(word).expect("bincode"),
                "stored as the word"
            );
            assert_eq!(
                bincode::deserialize::<GenerationStatus>(&stored).expect("back"),
                status
            );
        }
        assert_eq!(
            GenerationStatus::parse("archived"),
            GenerationStatus::Other("archived".into())
        );
        for word in [
            "pending",
            "published",
            "published_with_warnings",
            "failed",
            "unpublished",
        ] {
            let status: PublicationStatus =
                serde_json::from_value(serde_json::json!(word)).expect("a word");
            assert_eq!(status.to_string(), word);
        }
    }

    fn item(status: &str, tent_id: Option<&str>, error_code: Option<&str>) -> BulkAdmissionItem {
        BulkAdmissionItem {
            index: 0,
            client_item_id: None,
            tent_id: tent_id.map(str::to_string),
            tent_name: None,
            custom_page_alias: None,
            status: status.to_string(),
            error_code: error_code.map(str::to_string),
            message: None,
        }
    }

    #[test]
    fn only_an_explicit_refusal_counts_as_refused() {
        assert_eq!(
            item("accepted", Some("t"), None).admission(),
            Admission::Accepted {
                tent_id: "t".into()
            }
        );
        // An unknown word with a tent id: Tented created a tent.
        assert!(matches!(
            item("queued", Some("t"), None).admission(),
            Admission::Accepted { .. }
        ));
        assert_eq!(
            item("rejected", None, Some("INVALID_ITEM")).admission(),
            Admission::Refused
        );
        assert_eq!(
            item("weird", None, Some("NOT_FOUND")).admission(),
            Admission::Refused
        );
        // Accepted without a tent id, or a word we do not know: maybe admitted.
        assert_eq!(item("accepted", None, None).admission(), Admission::Unclear);
        assert_eq!(
            item("accepted", Some(""), None).admission(),
            Admission::Unclear
        );
        assert_eq!(
            item("accepted", None, Some("X")).admission(),
            Admission::Unclear
        );
        assert_eq!(item("pending", None, None).admission(), Admission::Unclear);
    }
}
