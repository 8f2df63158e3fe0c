//! The leader's mailbox of image builds: the API hands a build (a stored
//! context, a tag, where its log goes, where its result goes) to whatever
//! builder the leader runs this term, and waits. A build is never written
//! to Raft: it lives as long as the request that asked for it, and a
//! change of leader ends it (the caller sees why and tries again). This
//! module only carries builds; it never runs one.

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::state::image_catalog::StoredImage;

/// One build asked for through the API.
#[derive(Debug)]
pub struct BuildRequest {
    /// The context archive (a tar with a Dockerfile at its root) in this
    /// manager's archive store.
    pub context: PathBuf,
    /// `name:tag` of the image to build.
    pub tag: String,
    /// Every line of the build's output, as it comes.
    pub log: mpsc::UnboundedSender<String>,
    /// The image the cluster now keeps, or why there is none.
    pub done: oneshot::Sender<Result<StoredImage, String>>,
}

/// Builds waiting for the leader's builder.
#[derive(Debug)]
pub struct Builds {
    tx: mpsc::Sender<BuildRequest>,
    rx: Mutex<mpsc::Receiver<BuildRequest>>,
}

/// Builds waiting beyond those running: more are refused.
const QUEUE: usize = 16;

impl Default for Builds {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Builds {
            tx,
            rx: Mutex::new(rx),
        }
    }
}

impl Builds {
    /// Queues `request`; gives it back when the queue is full.
    pub fn submit(&self, request: BuildRequest) -> Result<(), BuildRequest> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
        })
    }

    /// The receiving end, held by one builder at a time (the builder of
    /// the current term; the next term's waits for it to be dropped).
    pub async fn take(&self) -> tokio::sync::MutexGuard<'_, mpsc::Receiver<BuildRequest>> {
        self.rx.lock().await
    }
}
