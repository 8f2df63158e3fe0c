//! The leader's image builder, one task per led term: takes the builds
//! the API queued ([`crate::replica::builds`]), one at a time, runs each on
//! a ready node the leader picks (the one with the fewest instances),
//! streams the build's output back to the caller, then makes the image
//! known to the cluster as an import does: its archive (`docker save`
//! from the node that built it) is kept by two managers and recorded
//! through Raft, with that node as its first holder. A build cut off by a
//! lost leadership answers so; nothing of it is retried here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::engines::Engines;
use crate::replica::builds::BuildRequest;
use crate::replica::Replica;
use crate::runtime::RuntimeError;
use crate::state::image_catalog::{ImageSource, StoredImage};
use crate::state::{Command, Node, NodeState, Outcome};

/// Longest one build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Runs the builds queued while this replica leads, until `token` ends.
pub async fn run(replica: Arc<Replica>, engines: Engines, token: CancellationToken) {
    let mut queue = tokio::select! {
        _ = token.cancelled() => return,
        queue = replica.builds.take() => queue,
    };
    loop {
        let request = tokio::select! {
            _ = token.cancelled() => return,
            request = queue.recv() => match request {
                Some(request) => request,
                None => return,
            },
        };
        let outcome = tokio::select! {
            _ = token.cancelled() => Err("this manager stopped leading during the build; build again".to_string()),
            outcome = build(&replica, &engines, &request) => outcome,
        };
        if let Err(reason) = &outcome {
            let _ = request.log.send(format!("error: {reason}"));
        }
        let _ = request.done.send(outcome);
    }
}

/// The ready node with the fewest instances.
fn pick_node(replica: &Replica) -> Option<Node> {
    replica.sm.read(|s| {
        let mut load = std::collections::HashMap::<&str, usize>::new();
        for instance in s.instances.values() {
            if let Some(node) = instance.node.as_deref() {
                *load.entry(node).or_default() += 1;
            }
        }
        s.nodes
            .values()
            .filter(|n| n.state == NodeState::Ready)
            .min_by_key(|n| load.get(n.name.as_str()).copied().unwrap_or(0))
            .cloned()
    })
}

async fn build(
    replica: &Replica,
    engines: &Engines,
    request: &BuildRequest,
) -> Result<StoredImage, String> {
    let node = pick_node(replica).ok_or("no node is ready to build on")?;
    let _ = request
        .log
        .send(format!("building {} on node {}", request.tag, node.name));
    let engine = engines.for_node(&node).map_err(|e| e.to_string())?;
    let file = tokio::fs::File::open(&request.context)
        .await
        .map_err(|e| format!("opening the build context: {e}"))?;
    let context = tokio_util::io::ReaderStream::new(file)
        .map(|chunk| chunk.map_err(|e| RuntimeError::Engine(format!("reading the context: {e}"))))
        .boxed();
    let info = engine
        .build_image(context, &request.tag, request.log.clone(), BUILD_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let _ = request.log.send(format!(
        "built {} ({}); keeping it on the managers",
        request.tag, info.id
    ));
    let archive = engine
        .save_image(&request.tag)
        .await
        .map_err(|e| format!("saving the built image: {e}"))?;
    let stored = replica
        .archives
        .store(archive, crate::replica::archives::MAX_ARCHIVE_BYTES, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut keepers = BTreeSet::from([replica.id]);
    if let Some(other) = replica.keep_archive_elsewhere(&stored).await? {
        keepers.insert(other);
    }
    let image = StoredImage {
        name: request.tag.clone(),
        id: info.id,
        size: stored.size,
        source: ImageSource::Build,
        archive: stored.sha256,
        keepers,
        holders: BTreeSet::from([node.name.clone()]),
        created_ms: 0,
        version: 0,
    };
    let applied = replica
        .write_as_leader(Command::PutStoredImage { image })
        .await
        .map_err(|e| e.to_string())?;
    match applied.outcome {
        Outcome::Done => replica
            .sm
            .read(|s| s.images.stored.get(&request.tag).cloned())
            .ok_or_else(|| "the built image was recorded and is gone again".to_string()),
        other => Err(format!("the built image was not recorded: {other:?}")),
    }
}
