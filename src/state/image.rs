//! The snapshot image of [`State`](super::State): the serializable form a
//! snapshot file holds, its versions and the migrations between them (see
//! [`super::migrate`]). Only data and conversions between versions; the
//! state builds and reads the current version.

use serde::{Deserialize, Serialize};

use super::command::{Applied, RequestId};
use super::history::HistoryBook;
use super::hooks::HookBook;
use super::image_catalog::ImageCatalog;
use super::manager_template::ManagerTemplate;
use super::migrate::{Migrate, Versioned};
use super::pipelines::PipelineBook;
use super::releases::ReleaseBook;
use super::sessions::SessionBook;
use super::templates::TemplateBook;
use super::topology::TopologyBook;
use super::types::{Event, Instance, KvEntry, Manager, Node, Service, TokenLimits, TokenRecord};
use super::volumes::VolumeBook;

/// Serializable image of the state, used for snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateImage {
    pub cluster_id: Option<String>,
    /// The cluster id the containers are labelled and named with, when
    /// it is not `cluster_id` (a cluster restored under a new id).
    pub owner_id: Option<String>,
    /// The peer protocol every replica may rely on (see
    /// [`crate::state::version`]).
    pub cluster_version: u32,
    pub services: Vec<Service>,
    pub instances: Vec<Instance>,
    pub nodes: Vec<Node>,
    pub managers: Vec<Manager>,
    pub kv: Vec<(String, KvEntry)>,
    pub kv_index: u64,
    pub kv_delete_index: u64,
    pub events: Vec<Event>,
    pub applied_index: u64,
    pub dedup: Vec<(RequestId, Applied)>,
    pub tokens: Vec<TokenRecord>,
    pub tokens_bootstrapped: bool,
    /// The limits of limited tokens, by token id.
    pub token_limits: Vec<(String, TokenLimits)>,
    /// Where the managers run, when bootstrap recorded it.
    pub manager_template: Option<Versioned<ManagerTemplate>>,
    /// Raft ids removed from the membership.
    pub departed_managers: Vec<u64>,
    /// Image pins, registry logins and the images the cluster keeps.
    pub images: Versioned<ImageCatalog>,
    /// Consul sessions and the locks they hold.
    pub sessions: Versioned<SessionBook>,
    /// The slots' volumes.
    pub volumes: Versioned<VolumeBook>,
    /// Backups and the verdicts of test hooks.
    pub hooks: Versioned<HookBook>,
    /// Templates of clustered third-party services.
    pub templates: Versioned<TemplateBook>,
    /// The services' spec histories.
    pub history: Versioned<HistoryBook>,
    /// Blue-green releases.
    pub releases: Versioned<ReleaseBook>,
    /// Named topologies and their versions.
    pub topologies: Versioned<TopologyBook>,
    /// Pipelines and their runs.
    pub pipelines: Versioned<PipelineBook>,
}

impl Migrate for StateImage {
    const VERSION_MARKER: &'static [u8] = b"SI12";
    type Previous = v11::StateImage;

    /// Before it was recorded, every cluster was at the first version.
    fn migrate(previous: v11::StateImage) -> StateImage {
        let v11::StateImage {
            cluster_id,
            owner_id,
            services,
            instances,
            nodes,
            managers,
            kv,
            kv_index,
            kv_delete_index,
            events,
            applied_index,
            dedup,
            tokens,
            tokens_bootstrapped,
            token_limits,
            manager_template,
            departed_managers,
            images,
            sessions,
            volumes,
            hooks,
            templates,
            history,
            releases,
            topologies,
            pipelines,
        } = previous;
        StateImage {
            cluster_version: crate::state::version::INITIAL_CLUSTER_VERSION,
            cluster_id,
            owner_id,
            services,
            instances,
            nodes,
            managers,
            kv,
            kv_index,
            kv_delete_index,
            events,
            applied_index,
            dedup,
            tokens,
            tokens_bootstrapped,
            token_limits,
            manager_template,
            departed_managers,
            images,
            sessions,
            volumes,
            hooks,
            templates,
            history,
            releases,
            topologies,
            pipelines,
        }
    }
}

/// `#[serde(with = "written")]`: an image written as its cluster version
/// allows — `SI12` from
/// [`SNAPSHOT_IMAGE_12`](crate::state::version::SNAPSHOT_IMAGE_12) on, `SI11` below, so a
/// replica of an older protocol can still install the snapshots and read
/// the backups of a cluster in the middle of an upgrade (the cluster
/// version, then 1, is what `SI11` means without it). Read as any version.
pub mod written {
    use serde::ser::Error as _;
    use serde::{Deserializer, Serialize, Serializer};

    use super::super::migrate::{self, Migrate};
    use super::*;
    use crate::state::version::SNAPSHOT_IMAGE_12;

    pub fn serialize<S: Serializer>(image: &StateImage, serializer: S) -> Result<S::Ok, S::Error> {
        if image.cluster_version >= SNAPSHOT_IMAGE_12 || serializer.is_human_readable() {
            return migrate::versioned::serialize(image, serializer);
        }
        serializer.serialize_bytes(&as_v11(image).map_err(S::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<StateImage, D::Error> {
        migrate::versioned::deserialize(deserializer)
    }

    /// `SI11` and the image in [`v11::StateImage`]'s layout, borrowed.
    pub(super) fn as_v11(image: &StateImage) -> Result<Vec<u8>, crate::codec::CodecError> {
        let view = V11View {
            cluster_id: &image.cluster_id,
            owner_id: &image.owner_id,
            services: &image.services,
            instances: &image.instances,
            nodes: &image.nodes,
            managers: &image.managers,
            kv: &image.kv,
            kv_index: &image.kv_index,
            kv_delete_index: &image.kv_delete_index,
            events: &image.events,
            applied_index: &image.applied_index,
            dedup: &image.dedup,
            tokens: &image.tokens,
            tokens_bootstrapped: &image.tokens_bootstrapped,
            token_limits: &image.token_limits,
            manager_template: &image.manager_template,
            departed_managers: &image.departed_managers,
            images: &image.images,
            sessions: &image.sessions,
            volumes: &image.volumes,
            hooks: &image.hooks,
            templates: &image.templates,
            history: &image.history,
            releases: &image.releases,
            topologies: &image.topologies,
            pipelines: &image.pipelines,
        };
        let body = crate::codec::encode(&view)?;
        let mut out = v11::StateImage::VERSION_MARKER.to_vec();
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// [`v11::StateImage`] by reference: the same fields in the same
    /// order, so the same encoding (the tests check it).
    #[derive(Serialize)]
    struct V11View<'a> {
        cluster_id: &'a Option<String>,
        owner_id: &'a Option<String>,
        services: &'a Vec<Service>,
        instances: &'a Vec<Instance>,
        nodes: &'a Vec<Node>,
        managers: &'a Vec<Manager>,
        kv: &'a Vec<(String, KvEntry)>,
        kv_index: &'a u64,
        kv_delete_index: &'a u64,
        events: &'a Vec<Event>,
        applied_index: &'a u64,
        dedup: &'a Vec<(RequestId, Applied)>,
        tokens: &'a Vec<TokenRecord>,
        tokens_bootstrapped: &'a bool,
        token_limits: &'a Vec<(String, TokenLimits)>,
        manager_template: &'a Option<Versioned<ManagerTemplate>>,
        departed_managers: &'a Vec<u64>,
        images: &'a Versioned<ImageCatalog>,
        sessions: &'a Versioned<SessionBook>,
        volumes: &'a Versioned<VolumeBook>,
        hooks: &'a Versioned<HookBook>,
        templates: &'a Versioned<TemplateBook>,
        history: &'a Versioned<HistoryBook>,
        releases: &'a Versioned<ReleaseBook>,
        topologies: &'a Versioned<TopologyBook>,
        pipelines: &'a Versioned<PipelineBook>,
    }
}

/// Frozen: the image as written before it held the cluster version
/// (and what clusters below cluster version 2 still write, see [`written`]).
pub mod v11 {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        /// The cluster id the containers are labelled and named with, when
        /// it is not `cluster_id` (a cluster restored under a new id).
        pub owner_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        /// The limits of limited tokens, by token id.
        pub token_limits: Vec<(String, TokenLimits)>,
        /// Where the managers run, when bootstrap recorded it.
        pub manager_template: Option<Versioned<ManagerTemplate>>,
        /// Raft ids removed from the membership.
        pub departed_managers: Vec<u64>,
        /// Image pins, registry logins and the images the cluster keeps.
        pub images: Versioned<ImageCatalog>,
        /// Consul sessions and the locks they hold.
        pub sessions: Versioned<SessionBook>,
        /// The slots' volumes.
        pub volumes: Versioned<VolumeBook>,
        /// Backups and the verdicts of test hooks.
        pub hooks: Versioned<HookBook>,
        /// Templates of clustered third-party services.
        pub templates: Versioned<TemplateBook>,
        /// The services' spec histories.
        pub history: Versioned<HistoryBook>,
        /// Blue-green releases.
        pub releases: Versioned<ReleaseBook>,
        /// Named topologies and their versions.
        pub topologies: Versioned<TopologyBook>,
        /// Pipelines and their runs.
        pub pipelines: Versioned<PipelineBook>,
    }

    impl Migrate for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI11";
        type Previous = super::v10::StateImage;

        /// Containers were always labelled with the cluster id.
        fn migrate(previous: super::v10::StateImage) -> StateImage {
            let super::v10::StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits,
                manager_template,
                departed_managers,
                images,
                sessions,
                volumes,
                hooks,
                templates,
                history,
                releases,
                topologies,
                pipelines,
            } = previous;
            StateImage {
                owner_id: None,
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits,
                manager_template,
                departed_managers,
                images,
                sessions,
                volumes,
                hooks,
                templates,
                history,
                releases,
                topologies,
                pipelines,
            }
        }
    }
}

/// Frozen: the image as written before restores kept the containers'
/// owner apart from the cluster id.
pub mod v10 {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        /// The limits of limited tokens, by token id.
        pub token_limits: Vec<(String, TokenLimits)>,
        /// Where the managers run, when bootstrap recorded it.
        pub manager_template: Option<Versioned<ManagerTemplate>>,
        /// Raft ids removed from the membership.
        pub departed_managers: Vec<u64>,
        /// Image pins, registry logins and the images the cluster keeps.
        pub images: Versioned<ImageCatalog>,
        /// Consul sessions and the locks they hold.
        pub sessions: Versioned<SessionBook>,
        /// The slots' volumes.
        pub volumes: Versioned<VolumeBook>,
        /// Backups and the verdicts of test hooks.
        pub hooks: Versioned<HookBook>,
        /// Templates of clustered third-party services.
        pub templates: Versioned<TemplateBook>,
        /// The services' spec histories.
        pub history: Versioned<HistoryBook>,
        /// Blue-green releases.
        pub releases: Versioned<ReleaseBook>,
        /// Named topologies and their versions.
        pub topologies: Versioned<TopologyBook>,
        /// Pipelines and their runs.
        pub pipelines: Versioned<PipelineBook>,
    }

    impl Migrate for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI10";
        type Previous = super::v9::StateImage;

        /// There were no releases, topologies or pipelines: their books start
        /// empty.
        fn migrate(previous: super::v9::StateImage) -> StateImage {
            let super::v9::StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits,
                manager_template,
                departed_managers,
                images,
                sessions,
                volumes,
                hooks,
                templates,
                history,
            } = previous;
            StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits,
                manager_template,
                departed_managers,
                images,
                sessions,
                volumes,
                hooks,
                templates,
                history,
                releases: Versioned(ReleaseBook::default()),
                topologies: Versioned(TopologyBook::default()),
                pipelines: Versioned(PipelineBook::default()),
            }
        }
    }
}

/// Frozen: the image as written before blue-green releases.
pub mod v9 {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        /// The limits of limited tokens, by token id.
        pub token_limits: Vec<(String, TokenLimits)>,
        /// Where the managers run, when bootstrap recorded it.
        pub manager_template: Option<Versioned<ManagerTemplate>>,
        /// Raft ids removed from the membership.
        pub departed_managers: Vec<u64>,
        /// Image pins, registry logins and the images the cluster keeps.
        pub images: Versioned<ImageCatalog>,
        /// Consul sessions and the locks they hold.
        pub sessions: Versioned<SessionBook>,
        /// The slots' volumes.
        pub volumes: Versioned<VolumeBook>,
        /// Backups and the verdicts of test hooks.
        pub hooks: Versioned<HookBook>,
        /// Templates of clustered third-party services.
        pub templates: Versioned<TemplateBook>,
        /// The services' spec histories.
        pub history: Versioned<HistoryBook>,
    }

    impl Migrate for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI09";
        type Previous = super::v8::StateImage;

        /// Versions written before were not kept: every history starts empty.
        fn migrate(previous: super::v8::StateImage) -> StateImage {
            let super::v8::StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits,
                manager_template,
                departed_managers,
                images,
                sessions,
                volumes,
                hooks,
                templates,
            } = previous;
            StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits,
                manager_template,
                departed_managers,
                images,
                sessions,
                volumes,
                hooks,
                templates,
                history: Versioned(HistoryBook::default()),
            }
        }
    }
}

/// Frozen: the image as written before services kept a spec history.
pub mod v8 {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        /// The limits of limited tokens, by token id.
        pub token_limits: Vec<(String, TokenLimits)>,
        /// Where the managers run, when bootstrap recorded it.
        pub manager_template: Option<Versioned<ManagerTemplate>>,
        /// Raft ids removed from the membership.
        pub departed_managers: Vec<u64>,
        /// Image pins, registry logins and the images the cluster keeps.
        pub images: Versioned<ImageCatalog>,
        /// Consul sessions and the locks they hold.
        pub sessions: Versioned<SessionBook>,
        /// The slots' volumes.
        pub volumes: Versioned<VolumeBook>,
        /// Backups and the verdicts of test hooks.
        pub hooks: Versioned<HookBook>,
        /// Templates of clustered third-party services.
        pub templates: Versioned<TemplateBook>,
    }

    impl Migrate for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI08";
        type Previous = v7::StateImage;

        /// Hooks had left nothing and there were no templates: both books
        /// start empty.
        fn migrate(previous: v7::StateImage) -> StateImage {
            let v7::StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits,
                manager_template,
                departed_managers,
                images,
                sessions,
                volumes,
            } = previous;
            StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits,
                manager_template,
                departed_managers,
                images,
                sessions,
                volumes,
                hooks: Versioned(HookBook::default()),
                templates: Versioned(TemplateBook::default()),
            }
        }
    }
}

/// Frozen: the image as written before hooks left anything.
pub mod v7 {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        /// The limits of limited tokens, by token id.
        pub token_limits: Vec<(String, TokenLimits)>,
        /// Where the managers run, when bootstrap recorded it.
        pub manager_template: Option<Versioned<ManagerTemplate>>,
        /// Raft ids removed from the membership.
        pub departed_managers: Vec<u64>,
        /// Image pins, registry logins and the images the cluster keeps.
        pub images: Versioned<ImageCatalog>,
        /// Consul sessions and the locks they hold.
        pub sessions: Versioned<SessionBook>,
        /// The slots' volumes.
        pub volumes: Versioned<VolumeBook>,
    }

    impl crate::state::migrate::Migrate for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI07";
        type Previous = super::v6::StateImage;

        /// Volumes were not recorded: the book starts empty.
        fn migrate(previous: super::v6::StateImage) -> StateImage {
            let super::v6::StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits,
                manager_template,
                departed_managers,
                images,
                sessions,
            } = previous;
            StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits,
                manager_template,
                departed_managers,
                images,
                sessions,
                volumes: Versioned(VolumeBook::default()),
            }
        }
    }
}

/// Frozen: the image as written before volumes were recorded.
pub mod v6 {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        /// The limits of limited tokens, by token id.
        pub token_limits: Vec<(String, TokenLimits)>,
        /// Where the managers run, when bootstrap recorded it.
        pub manager_template: Option<Versioned<ManagerTemplate>>,
        /// Raft ids removed from the membership.
        pub departed_managers: Vec<u64>,
        /// Image pins, registry logins and the images the cluster keeps.
        pub images: Versioned<ImageCatalog>,
        /// Consul sessions and the locks they hold.
        pub sessions: Versioned<SessionBook>,
    }

    impl Migrate for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI06";
        type Previous = super::v5::StateImage;

        /// Tokens could not be limited: every earlier token reaches the whole
        /// cluster.
        fn migrate(previous: super::v5::StateImage) -> StateImage {
            let super::v5::StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                manager_template,
                departed_managers,
                images,
                sessions,
            } = previous;
            StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                token_limits: Vec::new(),
                manager_template,
                departed_managers,
                images,
                sessions,
            }
        }
    }
}

/// Frozen: the image as written before tokens could be limited.
pub mod v5 {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        /// Where the managers run, when bootstrap recorded it.
        pub manager_template: Option<Versioned<ManagerTemplate>>,
        /// Raft ids removed from the membership.
        pub departed_managers: Vec<u64>,
        /// Image pins, registry logins and the images the cluster keeps.
        pub images: Versioned<ImageCatalog>,
        /// Consul sessions and the locks they hold.
        pub sessions: Versioned<SessionBook>,
    }

    impl Migrate for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI05";
        type Previous = super::v4::StateImage;

        /// Events did not name who caused them: the actor of every earlier
        /// event is unknown.
        fn migrate(previous: super::v4::StateImage) -> StateImage {
            let super::v4::StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                manager_template,
                departed_managers,
                images,
                sessions,
            } = previous;
            StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events: events.into_iter().map(Event::from).collect(),
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                manager_template,
                departed_managers,
                images,
                sessions,
            }
        }
    }
}

/// Frozen: the image as written before events named their actor.
pub mod v4 {
    use super::*;
    use crate::state::types::event_v1::Event;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        /// Where the managers run, when bootstrap recorded it.
        pub manager_template: Option<Versioned<ManagerTemplate>>,
        /// Raft ids removed from the membership.
        pub departed_managers: Vec<u64>,
        /// Image pins, registry logins and the images the cluster keeps.
        pub images: Versioned<ImageCatalog>,
        /// Consul sessions and the locks they hold.
        pub sessions: Versioned<SessionBook>,
    }

    impl Migrate for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI04";
        type Previous = v3::StateImage;

        /// Sessions were not part of the state: none existed, no key was locked.
        fn migrate(previous: v3::StateImage) -> StateImage {
            let v3::StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                manager_template,
                departed_managers,
                images,
            } = previous;
            StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                manager_template,
                departed_managers,
                images,
                sessions: Versioned(SessionBook::default()),
            }
        }
    }
}

/// Frozen: the image as written before sessions were part of the state.
pub mod v3 {
    use super::*;
    use crate::state::types::event_v1::Event;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        /// Where the managers run, when bootstrap recorded it.
        pub manager_template: Option<Versioned<ManagerTemplate>>,
        /// Raft ids removed from the membership.
        pub departed_managers: Vec<u64>,
        /// Image pins, registry logins and the images the cluster keeps.
        pub images: Versioned<ImageCatalog>,
    }

    impl Migrate for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI03";
        type Previous = v2::StateImage;

        /// Images were not part of the state: nothing pinned, logged in or kept.
        fn migrate(previous: v2::StateImage) -> StateImage {
            let v2::StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                manager_template,
                departed_managers,
            } = previous;
            StateImage {
                cluster_id,
                services,
                instances,
                nodes,
                managers,
                kv,
                kv_index,
                kv_delete_index,
                events,
                applied_index,
                dedup,
                tokens,
                tokens_bootstrapped,
                manager_template,
                departed_managers,
                images: Versioned(ImageCatalog::default()),
            }
        }
    }
}

/// Frozen: the image as written before images were part of the state.
pub mod v2 {
    use super::*;
    use crate::state::types::event_v1::Event;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        pub manager_template: Option<Versioned<ManagerTemplate>>,
        pub departed_managers: Vec<u64>,
    }

    impl Migrate for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI02";
        type Previous = v1::StateImage;

        /// The manager template was JSON text; one that does not parse or
        /// pass validation was unusable before too, and is dropped.
        fn migrate(previous: v1::StateImage) -> StateImage {
            let manager_template = previous.manager_plan.and_then(|json| {
                ManagerTemplate::from_json(&json)
                    .inspect_err(|reason| {
                        tracing::warn!(%reason, "the snapshot's manager template is dropped");
                    })
                    .ok()
            });
            StateImage {
                cluster_id: previous.cluster_id,
                services: previous.services,
                instances: previous.instances,
                nodes: previous.nodes,
                managers: previous.managers,
                kv: previous.kv,
                kv_index: previous.kv_index,
                kv_delete_index: previous.kv_delete_index,
                events: previous.events,
                applied_index: previous.applied_index,
                dedup: previous.dedup,
                tokens: previous.tokens,
                tokens_bootstrapped: previous.tokens_bootstrapped,
                manager_template: manager_template.map(Versioned),
                departed_managers: previous.departed_managers,
            }
        }
    }
}

/// Frozen: the image as written until the manager template was typed.
pub mod v1 {
    use super::*;
    use crate::state::types::event_v1::Event;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct StateImage {
        pub cluster_id: Option<String>,
        pub services: Vec<Service>,
        pub instances: Vec<Instance>,
        pub nodes: Vec<Node>,
        pub managers: Vec<Manager>,
        pub kv: Vec<(String, KvEntry)>,
        pub kv_index: u64,
        pub kv_delete_index: u64,
        pub events: Vec<Event>,
        pub applied_index: u64,
        pub dedup: Vec<(RequestId, Applied)>,
        pub tokens: Vec<TokenRecord>,
        pub tokens_bootstrapped: bool,
        /// The managers' cluster file as JSON text.
        pub manager_plan: Option<String>,
        #[serde(default)]
        pub departed_managers: Vec<u64>,
    }

    impl crate::state::migrate::FirstVersion for StateImage {
        const VERSION_MARKER: &'static [u8] = b"SI01";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_image(manager_plan: Option<&str>) -> v1::StateImage {
        v1::StateImage {
            cluster_id: Some("c".into()),
            services: Vec::new(),
            instances: Vec::new(),
            nodes: Vec::new(),
            managers: Vec::new(),
            kv: Vec::new(),
            kv_index: 3,
            kv_delete_index: 0,
            events: Vec::new(),
            applied_index: 9,
            dedup: Vec::new(),
            tokens: Vec::new(),
            tokens_bootstrapped: true,
            manager_plan: manager_plan.map(String::from),
            departed_managers: vec![4],
        }
    }

    const TEMPLATE: &str = r#"{"cluster":"demo","state_dir":"/srv/rv","machines":[{"name":"local","docker_endpoint":"unix:///var/run/docker.sock","address":"127.0.0.1"}],"managers":[{"id":1,"machine":"local","api_port":7301,"peer_port":7311,"dns_port":7321}]}"#;

    #[test]
    fn a_version_1_image_gets_its_manager_template_typed() {
        let bytes = Migrate::encode(&v1_image(Some(TEMPLATE))).unwrap();
        let image = StateImage::decode(&bytes).unwrap();
        let template = image.manager_template.unwrap().0;
        assert_eq!(template.cluster, "demo");
        assert_eq!(template.image, "raftvisor:local");
        assert_eq!((image.kv_index, image.applied_index), (3, 9));
        assert_eq!(image.departed_managers, [4]);
        assert!(image.token_limits.is_empty());
    }

    #[test]
    fn a_broken_manager_template_is_dropped_not_a_panic() {
        for broken in [
            "{not json",
            r#"{"cluster":"demo","state_dir":"/x","machines":[],"managers":[]}"#,
        ] {
            let image = v2::StateImage::migrate(v1_image(Some(broken)));
            assert!(image.manager_template.is_none(), "{broken}");
            assert_eq!(image.cluster_id.as_deref(), Some("c"));
        }
        assert!(v2::StateImage::migrate(v1_image(None))
            .manager_template
            .is_none());
    }

    #[derive(Serialize, Deserialize)]
    struct Holder {
        #[serde(with = "written")]
        image: StateImage,
    }

    fn holds(bytes: &[u8], marker: &[u8]) -> bool {
        bytes.windows(marker.len()).any(|w| w == marker)
    }

    #[test]
    fn an_image_is_written_as_its_cluster_version_allows() {
        let mut image = crate::state::State::default().to_image();
        image.cluster_id = Some("c".into());
        image.departed_managers = vec![4];
        assert_eq!(image.cluster_version, 1);
        // Below version 2: SI11, in the very layout of 0.1.0's images.
        let old = written::as_v11(&image).unwrap();
        let read_by_0_1 = v11::StateImage::decode(&old).unwrap();
        assert_eq!(Migrate::encode(&read_by_0_1).unwrap(), old);
        let bytes = crate::codec::encode(&Holder {
            image: image.clone(),
        })
        .unwrap();
        assert!(holds(&bytes, b"SI11") && !holds(&bytes, b"SI12"));
        let back: Holder = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back.image.cluster_version, 1);
        assert_eq!(back.image.departed_managers, [4]);
        // From version 2: SI12, which keeps the version.
        image.cluster_version = 2;
        let bytes = crate::codec::encode(&Holder { image }).unwrap();
        assert!(holds(&bytes, b"SI12"));
        let back: Holder = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back.image.cluster_version, 2);
        assert_eq!(back.image.cluster_id.as_deref(), Some("c"));
    }
}
