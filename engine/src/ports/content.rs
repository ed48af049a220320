//! The content-model port: draft a campaign template from a brief (AI providers, or
//! the deterministic drafts of [`crate::drafts`]).

use crate::template::Template;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The voice of a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    Friendly,
    Formal,
    Urgent,
}

/// What a campaign should say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftBrief {
    /// What the campaign is about, e.g. "the spring collection".
    pub product: String,
    /// Who receives it, e.g. "returning customers".
    pub audience: String,
    /// What the reader gets, e.g. "20% off until Sunday".
    pub offer: String,
    pub tone: Tone,
    /// Where the button points.
    pub call_to_action_url: Option<String>,
}

/// Why no draft was produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("brief field {field} is invalid: {reason}")]
    InvalidBrief { field: &'static str, reason: String },
    #[error("content provider {provider} unavailable: {reason}")]
    Unavailable { provider: String, reason: String },
    #[error("content provider {provider} returned an unusable draft: {reason}")]
    Unusable { provider: String, reason: String },
}

/// Drafts templates; the result always compiles and uses `{{ first_name }}`.
#[async_trait]
pub trait ContentModel: Send + Sync + 'static {
    /// The provider's name, for logs and errors.
    fn name(&self) -> &str;

    /// Drafts a template for the brief.
    async fn draft(&self, brief: &DraftBrief) -> Result<Template, ContentError>;
}
