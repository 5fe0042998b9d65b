//! Serving one signed release to DDI devices: the artifact server for its files and its signed
//! manifest, and the deployment (one chunk with the digests DDI clients check) a controller is
//! given. Shared by `convoy ddi serve` and the rollout engine's DDI link.
//!
//! The manifest devices download is the canonical form of the verified manifest
//! ([`VerifiedManifest::served_bytes`]), written to a private file for the artifact server,
//! never the file the operator passed: whitespace, key order or a second reading in that file
//! cannot reach a device.
//!
//! Not here: checking the files against the manifest (the callers do it before serving
//! anything), and deciding who gets the deployment.

use anyhow::{Context, Result, bail};
use convoy_core::manifest::VerifiedManifest;
use convoy_core::release::ReleaseSpec;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::hub::{DdiArtifact, DdiDeployment};
use super::wire::HandlingType;
use crate::link::http::{ArtifactServer, Content, ServerConfig};

/// Where a release's files are and how devices reach them.
#[derive(Clone, Copy, Debug)]
pub struct ReleaseFiles<'a> {
    pub spec: &'a ReleaseSpec,
    /// The verified manifest, served in canonical form beside the artifacts as
    /// `{release}.manifest.json`.
    pub manifest: &'a VerifiedManifest,
    /// The artifact files, in the manifest's order (already checked against it).
    pub artifacts: &'a [PathBuf],
    /// Where the artifact server listens (port 0: any free port).
    pub artifact_listen: SocketAddr,
    /// The artifact server's URL as devices reach it; needed when it listens on 0.0.0.0.
    pub artifact_url: Option<&'a str>,
    /// The DDI chunk's `part` (software module type).
    pub part: &'a str,
}

/// A release being served: the running artifact server and the deployment that names it.
pub struct ServedRelease {
    pub artifacts: ArtifactServer,
    /// The artifact server's URL as devices see it, without a trailing `/`.
    pub base_url: String,
    pub deployment: Arc<DdiDeployment>,
    /// The directory holding the served canonical manifest: keep it as long as the server runs
    /// (dropping it deletes the file).
    pub manifest_dir: tempfile::TempDir,
}

/// Starts the artifact server for `files` and builds the deployment devices are given.
pub async fn serve_release(files: &ReleaseFiles<'_>) -> Result<ServedRelease> {
    let spec = files.spec;
    if files.artifacts.len() != spec.artifacts.len() {
        bail!(
            "release {} has {} artifact(s); DDI devices need each file (--artifact, in the manifest's order; {} given)",
            spec.id,
            spec.artifacts.len(),
            files.artifacts.len()
        );
    }
    let mut served: BTreeMap<String, PathBuf> = files
        .artifacts
        .iter()
        .zip(&spec.artifacts)
        .map(|(p, e)| (e.name.clone(), p.clone()))
        .collect();
    let manifest_name = format!("{}.manifest.json", spec.id);
    let manifest_dir = tempfile::Builder::new()
        .prefix("convoy-manifest-")
        .tempdir()
        .context("creating a directory for the served manifest")?;
    let manifest_path = manifest_dir.path().join(&manifest_name);
    crate::files::write_file(
        &manifest_path,
        &files.manifest.served_bytes(),
        crate::files::FileMode::Public,
    )?;
    served.insert(manifest_name.clone(), manifest_path);
    let artifacts = ArtifactServer::start(
        Content::Files(served),
        ServerConfig::new(files.artifact_listen),
    )
    .await?;
    let base_url = match files.artifact_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None if artifacts.addr().ip().is_unspecified() => {
            let addr = artifacts.addr();
            artifacts.shutdown().await;
            bail!(
                "the artifact server listens on {addr}: pass the address devices reach it by (--artifact-url)"
            );
        }
        None => format!("http://{}", artifacts.addr()),
    };
    let url_of = |name: &str| {
        format!(
            "{base_url}/{}",
            crate::link::http::range::encode_segment(name)
        )
    };
    let mut ddi_artifacts = Vec::with_capacity(spec.artifacts.len());
    for (path, e) in files.artifacts.iter().zip(&spec.artifacts) {
        match DdiArtifact::from_file(path, &e.name, &url_of(&e.name)) {
            Ok(a) => ddi_artifacts.push(a),
            Err(err) => {
                artifacts.shutdown().await;
                return Err(err);
            }
        }
    }
    let deployment = Arc::new(DdiDeployment {
        release_id: spec.id.clone(),
        part: files.part.to_owned(),
        name: spec.id.clone(),
        version: spec.version.to_string(),
        artifacts: ddi_artifacts,
        metadata: vec![
            ("convoy.release_id".into(), spec.id.clone()),
            ("convoy.counter".into(), spec.counter.to_string()),
            ("convoy.manifest_url".into(), url_of(&manifest_name)),
        ],
        download: HandlingType::Forced,
        update: HandlingType::Forced,
        maintenance_window: None,
    });
    Ok(ServedRelease {
        artifacts,
        base_url,
        deployment,
        manifest_dir,
    })
}
