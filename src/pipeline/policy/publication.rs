//! What an item asked for its publication, read the same way when its request is built
//! (submission) and when its result is (reconciliation).

use crate::manifest::ManifestKind;
use crate::state::item::ItemRecord;
use crate::store::ManifestRecord;

/// Whether an item asked for auto-publish (bulk: the manifest's flag; create: the item
/// over the defaults; edit: the item).
pub fn wants_publication(manifest: &ManifestRecord, item: &ItemRecord) -> bool {
    let own = item.fields.as_ref();
    let flag = match manifest.kind {
        ManifestKind::Bulk => manifest.top.auto_publish,
        ManifestKind::Create => own
            .and_then(|f| f.auto_publish)
            .or_else(|| manifest.top.defaults.as_ref().and_then(|d| d.auto_publish)),
        ManifestKind::Edit => own.and_then(|f| f.auto_publish),
    };
    flag == Some(true)
}

/// The alias an item asked for (for the result's publication object).
pub fn requested_alias(item: &ItemRecord) -> Option<String> {
    item.fields
        .as_ref()
        .and_then(|f| f.custom_page_alias.clone())
}
