//! TEST DOUBLE of Azure: a small axum server on 127.0.0.1 that plays the
//! few Azure endpoints the `azure` machine provider calls — the Microsoft
//! Entra token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client
//! credentials) and Azure Resource Manager's virtual machine endpoints
//! (`PUT|GET|DELETE …/virtualMachines/{name}`, `POST …/start|restart|deallocate`,
//! `GET …/instanceView`, the NIC's `GET …/networkInterfaces/{nic}`) and the
//! `Azure-AsyncOperation` status URLs. It is not Azure and proves nothing
//! about Azure's behaviour beyond what is written here.
//!
//! It checks what a real ARM would refuse: the path, the `api-version`, the
//! shape of the VM body, and `Authorization: Bearer <a token it issued>`
//! (anything else is a 401). Long-running operations answer 201/202 with
//! an `Azure-AsyncOperation` URL that reports `InProgress` for
//! `polls_needed` polls before `Succeeded`; knobs make the next operation
//! of a kind fail, or never finish. Every refusal is recorded in
//! `violations` so a test can assert the provider made none.

#![allow(dead_code)]
// Handlers return the refusal itself as the error: it is sent as is.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

pub const COMPUTE_API_VERSION: &str = "2024-07-01";
pub const TENANT: &str = "double-tenant";
pub const CLIENT_ID: &str = "double-client";
pub const CLIENT_SECRET: &str = "double-secret-never-logged";

/// A VM as the double keeps it.
#[derive(Debug, Clone)]
pub struct Vm {
    pub body: Value,
    pub provisioning: String,
    pub power: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Succeed,
    Fail,
    Never,
}

#[derive(Debug)]
struct Operation {
    kind: String,
    vm: String,
    polls_left: u32,
    outcome: Outcome,
}

#[derive(Debug, Default)]
pub struct DoubleState {
    pub token: String,
    pub tokens_issued: u32,
    pub vms: BTreeMap<String, Vm>,
    operations: HashMap<String, Operation>,
    next_op: u64,
    pub polls_needed: u32,
    /// Operation kinds ("create", "start", ...) whose next run fails / never ends.
    fail_next: Vec<String>,
    hang_next: Vec<String>,
    /// `(operation kind, polls it took)` of every finished operation.
    pub finished: Vec<(String, u32)>,
    /// Requests the double refused (wrong path, api-version, body, token).
    pub violations: Vec<String>,
    /// `METHOD path` of every ARM request, in order.
    pub requests: Vec<String>,
}

/// The running double.
pub struct ArmDouble {
    pub url: String,
    pub state: Arc<Mutex<DoubleState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ArmDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ArmDouble {
    pub async fn start(polls_needed: u32) -> ArmDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(DoubleState {
            token: format!("double-token-{}", uuid::Uuid::new_v4()),
            polls_needed,
            ..DoubleState::default()
        }));
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}",
                get(get_vm).put(put_vm).delete(delete_vm),
            )
            .route(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}/{action}",
                get(instance_view).post(power_action),
            )
            .route(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces/{nic}",
                get(get_nic),
            )
            .route(
                "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}",
                get(poll_operation),
            )
            .fallback(fallback)
            .with_state(Ctx {
                state: state.clone(),
                url: url.clone(),
            });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        ArmDouble { url, state, task }
    }

    pub fn fail_next(&self, kind: &str) {
        self.state.lock().unwrap().fail_next.push(kind.into());
    }

    pub fn hang_next(&self, kind: &str) {
        self.state.lock().unwrap().hang_next.push(kind.into());
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub fn vm(&self, name: &str) -> Option<Vm> {
        self.state.lock().unwrap().vms.get(name).cloned()
    }

    pub fn finished(&self) -> Vec<(String, u32)> {
        self.state.lock().unwrap().finished.clone()
    }

    pub fn tokens_issued(&self) -> u32 {
        self.state.lock().unwrap().tokens_issued
    }

    pub fn token(&self) -> String {
        self.state.lock().unwrap().token.clone()
    }
}

#[derive(Clone)]
struct Ctx {
    state: Arc<Mutex<DoubleState>>,
    url: String,
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

impl Ctx {
    /// Checks the bearer token and the api-version; records refusals.
    fn admit(
        &self,
        what: &str,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
        api_version: &str,
    ) -> Result<(), Response> {
        let mut state = self.state.lock().unwrap();
        state.requests.push(what.to_string());
        let expected = format!("Bearer {}", state.token);
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if given != expected {
            state
                .violations
                .push(format!("{what}: no valid bearer token"));
            return Err(arm_error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "the access token is missing or was not issued by this double",
            ));
        }
        match query.get("api-version") {
            Some(v) if v == api_version => Ok(()),
            other => {
                state.violations.push(format!(
                    "{what}: api-version {other:?}, expected {api_version}"
                ));
                Err(arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidApiVersionParameter",
                    &format!("api-version {other:?} is not {api_version}"),
                ))
            }
        }
    }

    fn check_scope(&self, sub: &str, rg: &str, what: &str) -> Result<(), Response> {
        if sub == crate::azure_provider::SUBSCRIPTION && rg == crate::azure_provider::RESOURCE_GROUP
        {
            return Ok(());
        }
        self.state.lock().unwrap().violations.push(format!(
            "{what}: unknown subscription/resource group {sub}/{rg}"
        ));
        Err(arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            "no such resource group",
        ))
    }

    /// Starts an operation on `vm`; the answer carries its status URL.
    fn begin(&self, kind: &str, vm: &str, status: StatusCode, body: Option<Value>) -> Response {
        let mut state = self.state.lock().unwrap();
        state.next_op += 1;
        let id = format!("op-{}", state.next_op);
        let outcome = if let Some(i) = state.fail_next.iter().position(|k| k == kind) {
            state.fail_next.remove(i);
            Outcome::Fail
        } else if let Some(i) = state.hang_next.iter().position(|k| k == kind) {
            state.hang_next.remove(i);
            Outcome::Never
        } else {
            Outcome::Succeed
        };
        let polls_left = state.polls_needed;
        state.operations.insert(
            id.clone(),
            Operation {
                kind: kind.into(),
                vm: vm.into(),
                polls_left,
                outcome,
            },
        );
        let status_url = format!(
            "{}/subscriptions/{}/providers/Microsoft.Compute/locations/westeurope/operations/{id}?api-version={COMPUTE_API_VERSION}",
            self.url,
            crate::azure_provider::SUBSCRIPTION
        );
        let mut response = match body {
            Some(body) => (status, Json(body)).into_response(),
            None => status.into_response(),
        };
        response
            .headers_mut()
            .insert("azure-asyncoperation", status_url.parse().unwrap());
        response
            .headers_mut()
            .insert("retry-after", "0".parse().unwrap());
        response
    }
}

async fn token(
    State(ctx): State<Ctx>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut state = ctx.state.lock().unwrap();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let expected_scope = format!("{}/.default", ctx.url);
    if tenant != TENANT
        || field("grant_type") != "client_credentials"
        || field("client_id") != CLIENT_ID
        || field("client_secret") != CLIENT_SECRET
        || field("scope") != expected_scope
    {
        state.violations.push(format!(
            "token: refused tenant {tenant:?}, client {:?}, scope {:?}",
            field("client_id"),
            field("scope")
        ));
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})),
        )
            .into_response();
    }
    state.tokens_issued += 1;
    Json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": state.token}))
        .into_response()
}

/// What a PUT body must carry; `Err` names the first thing missing.
fn check_vm_body(body: &Value) -> Result<(), String> {
    let p = &body["properties"];
    let need = |v: &Value, what: &str| {
        if v.is_null() || v.as_str() == Some("") {
            Err(format!("missing {what}"))
        } else {
            Ok(())
        }
    };
    need(&body["location"], "location")?;
    need(&p["hardwareProfile"]["vmSize"], "hardwareProfile.vmSize")?;
    for k in ["publisher", "offer", "sku", "version"] {
        need(&p["storageProfile"]["imageReference"][k], k)?;
    }
    need(&p["osProfile"]["adminUsername"], "osProfile.adminUsername")?;
    need(
        &p["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["keyData"],
        "ssh key",
    )?;
    let custom = p["osProfile"]["customData"]
        .as_str()
        .ok_or("missing osProfile.customData")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(custom)
        .map_err(|e| format!("customData is not base64: {e}"))?;
    if !decoded.starts_with(b"#cloud-config\n") {
        return Err("customData is not a cloud-config document".into());
    }
    need(
        &p["networkProfile"]["networkApiVersion"],
        "networkApiVersion",
    )?;
    need(
        &p["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]["ipConfigurations"]
            [0]["properties"]["subnet"]["id"],
        "NIC subnet id",
    )?;
    Ok(())
}

fn vm_json(ctx: &Ctx, sub: &str, rg: &str, name: &str, vm: &Vm) -> Value {
    let mut body = vm.body.clone();
    body["id"] = json!(format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
    ));
    body["name"] = json!(name);
    body["type"] = json!("Microsoft.Compute/virtualMachines");
    body["properties"]["provisioningState"] = json!(vm.provisioning);
    // ARM never returns customData.
    body["properties"]["osProfile"]
        .as_object_mut()
        .map(|o| o.remove("customData"));
    body["properties"]["networkProfile"]["networkInterfaces"] = json!([{
        "id": format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces/{name}-nic"),
        "properties": {"primary": true},
    }]);
    let _ = ctx;
    body
}

type VmPath = Path<(String, String, String)>;

async fn put_vm(
    State(ctx): State<Ctx>,
    Path((sub, rg, name)): VmPath,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let what = format!("PUT vm {name}");
    if let Err(r) = ctx.admit(&what, &headers, &query, COMPUTE_API_VERSION) {
        return r;
    }
    if let Err(r) = ctx.check_scope(&sub, &rg, &what) {
        return r;
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            ctx.state
                .lock()
                .unwrap()
                .violations
                .push(format!("{what}: {e}"));
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                &e.to_string(),
            );
        }
    };
    if let Err(why) = check_vm_body(&body) {
        ctx.state
            .lock()
            .unwrap()
            .violations
            .push(format!("{what}: {why}"));
        return arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", &why);
    }
    let vm = Vm {
        body,
        provisioning: "Creating".into(),
        power: "starting".into(),
    };
    ctx.state
        .lock()
        .unwrap()
        .vms
        .insert(name.clone(), vm.clone());
    let answer = vm_json(&ctx, &sub, &rg, &name, &vm);
    ctx.begin("create", &name, StatusCode::CREATED, Some(answer))
}

async fn get_vm(
    State(ctx): State<Ctx>,
    Path((sub, rg, name)): VmPath,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let what = format!("GET vm {name}");
    if let Err(r) = ctx.admit(&what, &headers, &query, COMPUTE_API_VERSION) {
        return r;
    }
    let vm = ctx.state.lock().unwrap().vms.get(&name).cloned();
    match vm {
        Some(vm) => Json(vm_json(&ctx, &sub, &rg, &name, &vm)).into_response(),
        None => arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", "no such VM"),
    }
}

async fn delete_vm(
    State(ctx): State<Ctx>,
    Path((sub, rg, name)): VmPath,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let what = format!("DELETE vm {name}");
    if let Err(r) = ctx.admit(&what, &headers, &query, COMPUTE_API_VERSION) {
        return r;
    }
    if let Err(r) = ctx.check_scope(&sub, &rg, &what) {
        return r;
    }
    if !ctx.state.lock().unwrap().vms.contains_key(&name) {
        return arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", "no such VM");
    }
    ctx.begin("delete", &name, StatusCode::ACCEPTED, None)
}

async fn power_action(
    State(ctx): State<Ctx>,
    Path((sub, rg, name, action)): Path<(String, String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let what = format!("POST vm {name}/{action}");
    if let Err(r) = ctx.admit(&what, &headers, &query, COMPUTE_API_VERSION) {
        return r;
    }
    if let Err(r) = ctx.check_scope(&sub, &rg, &what) {
        return r;
    }
    if !matches!(action.as_str(), "start" | "restart" | "deallocate") {
        ctx.state
            .lock()
            .unwrap()
            .violations
            .push(format!("{what}: unknown action"));
        return arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "no such action",
        );
    }
    if !ctx.state.lock().unwrap().vms.contains_key(&name) {
        return arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", "no such VM");
    }
    ctx.begin(&action, &name, StatusCode::ACCEPTED, None)
}

async fn instance_view(
    State(ctx): State<Ctx>,
    Path((_sub, _rg, name, action)): Path<(String, String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let what = format!("GET vm {name}/{action}");
    if let Err(r) = ctx.admit(&what, &headers, &query, COMPUTE_API_VERSION) {
        return r;
    }
    if action != "instanceView" {
        ctx.state
            .lock()
            .unwrap()
            .violations
            .push(format!("{what}: unknown view"));
        return arm_error(StatusCode::NOT_FOUND, "InvalidResourceType", "no such view");
    }
    let vm = ctx.state.lock().unwrap().vms.get(&name).cloned();
    match vm {
        Some(vm) => Json(json!({
            "computerName": name,
            "statuses": [
                {"code": format!("ProvisioningState/{}", vm.provisioning.to_lowercase()), "level": "Info", "displayStatus": vm.provisioning},
                {"code": format!("PowerState/{}", vm.power), "level": "Info", "displayStatus": format!("VM {}", vm.power)},
            ],
        }))
        .into_response(),
        None => arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", "no such VM"),
    }
}

async fn get_nic(
    State(ctx): State<Ctx>,
    Path((_sub, _rg, nic)): VmPath,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let what = format!("GET nic {nic}");
    if let Err(r) = ctx.admit(
        &what,
        &headers,
        &query,
        raftvisor::provider::azure::NETWORK_API_VERSION,
    ) {
        return r;
    }
    let vm = nic.strip_suffix("-nic").unwrap_or("");
    if !ctx.state.lock().unwrap().vms.contains_key(vm) {
        return arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", "no such NIC");
    }
    Json(json!({
        "name": nic,
        "properties": {"ipConfigurations": [
            {"name": "ipconfig1", "properties": {"primary": true, "privateIPAddress": "10.0.0.4"}},
        ]},
    }))
    .into_response()
}

async fn poll_operation(
    State(ctx): State<Ctx>,
    Path((_sub, _loc, id)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let what = format!("GET operation {id}");
    if let Err(r) = ctx.admit(&what, &headers, &query, COMPUTE_API_VERSION) {
        return r;
    }
    let mut state = ctx.state.lock().unwrap();
    let polls_needed = state.polls_needed;
    let Some(op) = state.operations.get_mut(&id) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            "no such operation",
        );
    };
    if op.outcome == Outcome::Never || op.polls_left > 0 {
        op.polls_left = op.polls_left.saturating_sub(1);
        return Json(json!({"name": id, "status": "InProgress"})).into_response();
    }
    let op = state.operations.remove(&id).expect("operation");
    state.finished.push((op.kind.clone(), polls_needed + 1));
    if op.outcome == Outcome::Fail {
        return Json(json!({
            "name": id,
            "status": "Failed",
            "error": {"code": "AllocationFailed", "message": "The double has no capacity for this operation."},
        }))
        .into_response();
    }
    match op.kind.as_str() {
        "delete" => {
            state.vms.remove(&op.vm);
        }
        kind => {
            if let Some(vm) = state.vms.get_mut(&op.vm) {
                vm.provisioning = "Succeeded".into();
                vm.power = match kind {
                    "deallocate" => "deallocated".into(),
                    _ => "running".into(),
                };
            }
        }
    }
    Json(json!({"name": id, "status": "Succeeded"})).into_response()
}

async fn fallback(
    State(ctx): State<Ctx>,
    uri: axum::http::Uri,
    method: axum::http::Method,
) -> Response {
    ctx.state
        .lock()
        .unwrap()
        .violations
        .push(format!("{method} {uri}: no such endpoint"));
    arm_error(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        "no such endpoint",
    )
}
