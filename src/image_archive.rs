//! What an image archive (`docker save` format, classic or OCI layout)
//! says about itself: the names it carries and the image id an engine will
//! give it (the SHA-256 of its config), read from `manifest.json` without
//! loading the archive. Reading only; it never talks to an engine.

use std::io::{Read, Seek, SeekFrom};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Why an archive cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an image archive (docker save format): {0}")]
    NotAnImage(String),
}

/// One image of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedImage {
    /// `sha256:<hex>` of the image config: the id every engine gives it.
    pub id: String,
    /// `name:tag` the archive tags it with.
    pub repo_tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
}

/// Largest `manifest.json` read.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// The images of the archive in `file`.
pub fn inspect(file: &mut std::fs::File) -> Result<Vec<ArchivedImage>, ArchiveError> {
    file.seek(SeekFrom::Start(0))?;
    let mut manifest = None;
    for entry in tar::Archive::new(&mut *file).entries()? {
        let mut entry = entry?;
        if entry.path()?.as_os_str() == "manifest.json" {
            let mut text = String::new();
            entry
                .by_ref()
                .take(MAX_MANIFEST_BYTES)
                .read_to_string(&mut text)?;
            manifest = Some(text);
            break;
        }
    }
    let manifest =
        manifest.ok_or_else(|| ArchiveError::NotAnImage("it has no manifest.json".into()))?;
    let entries: Vec<ManifestEntry> = serde_json::from_str(&manifest)
        .map_err(|e| ArchiveError::NotAnImage(format!("manifest.json: {e}")))?;
    if entries.is_empty() {
        return Err(ArchiveError::NotAnImage(
            "manifest.json lists no image".into(),
        ));
    }
    let mut images = Vec::new();
    for wanted in entries {
        file.seek(SeekFrom::Start(0))?;
        let mut id = None;
        for entry in tar::Archive::new(&mut *file).entries()? {
            let mut entry = entry?;
            if entry.path()?.to_string_lossy() == wanted.config {
                let mut hasher = Sha256::new();
                std::io::copy(&mut entry, &mut hasher)?;
                id = Some(format!("sha256:{:x}", hasher.finalize()));
                break;
            }
        }
        let id = id.ok_or_else(|| {
            ArchiveError::NotAnImage(format!("its config {} is missing", wanted.config))
        })?;
        images.push(ArchivedImage {
            id,
            repo_tags: wanted.repo_tags.unwrap_or_default(),
        });
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> std::fs::File {
        let mut file = tempfile::tempfile().unwrap();
        {
            let mut builder = tar::Builder::new(&mut file);
            for (path, data) in files {
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append_data(&mut header, path, *data).unwrap();
            }
            builder.finish().unwrap();
        }
        file
    }

    #[test]
    fn the_id_is_the_digest_of_the_config_and_the_names_come_from_the_manifest() {
        let config = br#"{"architecture":"amd64"}"#;
        let hex = format!("{:x}", Sha256::digest(config));
        let manifest =
            format!(r#"[{{"Config":"{hex}.json","RepoTags":["app:1"],"Layers":["l/layer.tar"]}}]"#);
        let mut file = archive(&[
            (&format!("{hex}.json"), config),
            ("l/layer.tar", b"layer"),
            ("manifest.json", manifest.as_bytes()),
        ]);
        let images = inspect(&mut file).unwrap();
        assert_eq!(
            images,
            vec![ArchivedImage {
                id: format!("sha256:{hex}"),
                repo_tags: vec!["app:1".into()],
            }]
        );
    }

    #[test]
    fn what_is_not_an_image_archive_is_refused() {
        let mut file = archive(&[("hello.txt", b"hi")]);
        assert!(matches!(
            inspect(&mut file),
            Err(ArchiveError::NotAnImage(_))
        ));
        let mut file = archive(&[("manifest.json", br#"[{"Config":"missing.json"}]"#)]);
        assert!(matches!(
            inspect(&mut file),
            Err(ArchiveError::NotAnImage(_))
        ));
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"not a tar at all, just text").unwrap();
        assert!(inspect(&mut file).is_err());
    }
}
