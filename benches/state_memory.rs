//! State memory: the heap one replica's replicated state holds for
//! 100,000 instances and for 100,000 KV keys — what every replica keeps in
//! memory for them, apart from the Raft log, the runtime and the
//! allocator's own slack (which the process's RSS adds: see
//! `scripts/bench-memory.sh`).
//!
//! Pure and in one thread: the state is built by applying the commands a
//! leader commits (`State::apply`, the same code every replica's state
//! machine runs), and a counting global allocator reports the bytes live
//! before and after. Two separate states:
//!   1. instances: NODES nodes, SERVICES services of REPLICAS replicas,
//!      each slot placed (`PlaceSlot`) and reported running with a
//!      container id, address and published port (`SetInstanceStatus`);
//!   2. KV: KEYS keys `bench/<n>` with VALUE_BYTES-byte values (`KvPut`).
//!
//!     cargo bench --bench state_memory
//!
//! Environment: STATE_NODES (5000), STATE_SERVICES (10000),
//! STATE_REPLICAS (10), STATE_KEYS (100000), STATE_VALUE_BYTES (256).
//! Exit status 1 when a command is refused or the instances exceed the
//! 1 GiB goal.

#[path = "common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use raftvisor::state::{
    Command, InstanceState, InstanceStatus, NodeSpec, Outcome, Protocol, PublishedPort, Request,
    RequestId, ServiceSpec, State,
};

/// Goal of the issue: the state for 100,000 instances under 1 GiB.
const GOAL_BYTES: f64 = 1024.0 * 1024.0 * 1024.0;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Applies commands as consecutive log entries, counting refusals.
struct Applier {
    state: State,
    index: u64,
    refused: usize,
}

impl Applier {
    fn new() -> Applier {
        Applier {
            state: State::default(),
            index: 0,
            refused: 0,
        }
    }

    fn apply(&mut self, command: Command) {
        self.index += 1;
        let request = Request {
            id: RequestId(u128::from(self.index)),
            time_ms: 1_700_000_000_000 + self.index,
            command,
        };
        let applied = self.state.apply(self.index, &request);
        if matches!(
            applied.outcome,
            Outcome::Rejected(_)
                | Outcome::Refused { .. }
                | Outcome::VersionMismatch { .. }
                | Outcome::NotFound
        ) {
            self.refused += 1;
            if self.refused <= 3 {
                eprintln!("refused at {}: {:?}", self.index, applied.outcome);
            }
        }
    }
}

impl Applier {
    /// The heap bytes held since `before` and `count`, the items made;
    /// ends the benchmark if any command was refused.
    fn finish(self, before: isize, count: usize) -> (isize, usize) {
        let held = live() - before;
        if self.refused > 0 {
            eprintln!("{} commands refused", self.refused);
            std::process::exit(1);
        }
        (held, count)
    }
}

fn node_name(n: usize) -> String {
    format!("node-{n:05}")
}

fn instances(nodes: usize, services: usize, replicas: usize) -> (isize, usize) {
    let before = live();
    let mut applier = Applier::new();
    for n in 0..nodes {
        let spec: NodeSpec = serde_json::from_value(serde_json::json!({
            "provider": "static",
            "docker_endpoint": format!("tcp://10.{}.{}.{}:2375", n / 65_536 % 256, n / 256 % 256, n % 256),
            "address": format!("10.{}.{}.{}", n / 65_536 % 256, n / 256 % 256, n % 256),
        }))
        .expect("node spec");
        applier.apply(Command::PutNode {
            name: node_name(n),
            spec,
            expected_version: None,
        });
    }
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "image": "raftvisor-echo:local",
        "replicas": replicas,
        "ports": [{"name": "http", "container_port": 8080}],
        "restart": {"initial_backoff_ms": 100, "max_backoff_ms": 30000, "reset_after_ms": 10000}
    }))
    .expect("service spec");
    for s in 0..services {
        applier.apply(Command::PutService {
            namespace: "bench".into(),
            name: format!("svc-{s:05}"),
            spec: spec.clone(),
            expected_version: None,
        });
    }
    let mut placed = 0;
    for s in 0..services {
        for slot in 0..replicas {
            let node = node_name(placed % nodes.max(1));
            applier.apply(Command::PlaceSlot {
                namespace: "bench".into(),
                service: format!("svc-{s:05}"),
                slot: slot as u32,
                node,
            });
            let id = format!("bench.svc-{s:05}.{slot}");
            let generation = applier
                .state
                .instances
                .get(&id)
                .map_or(1, |instance| instance.generation);
            applier.apply(Command::SetInstanceStatus {
                id,
                generation,
                status: InstanceStatus {
                    state: InstanceState::Running,
                    container_id: Some(format!("{placed:064x}")),
                    restarts: 0,
                    last_exit: None,
                    address: Some(format!("10.200.{}.{}", placed / 256 % 256, placed % 256)),
                    ports: vec![PublishedPort {
                        name: "http".into(),
                        container_port: 8080,
                        host_port: 30_000 + (placed % 20_000) as u16,
                        protocol: Protocol::Tcp,
                    }],
                    spec_version: 1,
                    restart_epoch: 0,
                },
            });
            placed += 1;
        }
    }
    let count = applier.state.instances.len();
    applier.finish(before, count)
}

fn keys(keys: usize, value_bytes: usize) -> (isize, usize) {
    let before = live();
    let mut applier = Applier::new();
    for k in 0..keys {
        let value: Vec<u8> = (0..value_bytes)
            .map(|i| b'a' + ((k + i) % 26) as u8)
            .collect();
        applier.apply(Command::KvPut {
            key: format!("bench/{k:08}"),
            value,
            flags: 0,
            cas: None,
        });
    }
    let count = applier.state.kv.len();
    applier.finish(before, count)
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let nodes: usize = common::env_number("STATE_NODES", 5_000);
    let services: usize = common::env_number("STATE_SERVICES", 10_000);
    let replicas: usize = common::env_number("STATE_REPLICAS", 10);
    let key_count: usize = common::env_number("STATE_KEYS", 100_000);
    let value_bytes: usize = common::env_number("STATE_VALUE_BYTES", 256);

    let (instance_bytes, instance_count) = instances(nodes, services, replicas);
    let (key_bytes, kv_count) = keys(key_count, value_bytes);

    println!();
    println!("## State memory (`cargo bench --bench state_memory`)");
    println!();
    println!("| state | items | heap held | bytes per item |");
    println!("|---|---:|---:|---:|");
    println!(
        "| {nodes} nodes, {services} services × {replicas} instances, all running | {instance_count} instances | {:.1} MiB | {:.0} |",
        mib(instance_bytes),
        instance_bytes as f64 / instance_count.max(1) as f64
    );
    println!(
        "| {kv_count} KV keys, {value_bytes}-byte values | {kv_count} keys | {:.1} MiB | {:.0} |",
        mib(key_bytes),
        key_bytes as f64 / kv_count.max(1) as f64
    );
    println!();
    let met = (instance_bytes as f64) < GOAL_BYTES;
    println!(
        "- goal: the state for {instance_count} instances under 1 GiB: {} ({:.1} MiB)",
        if met { "met" } else { "NOT met" },
        mib(instance_bytes)
    );
    if !met {
        std::process::exit(1);
    }
}
