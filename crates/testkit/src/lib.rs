//! The test layer over the product's API server ([`apiserver`]): a
//! writable, Kubernetes-compatible API on `127.0.0.1:<ephemeral>` with
//! fault injection and counters, for tests and benchmarks.
//!
//! [`TestApi::start`] starts an [`apiserver::ApiServer`] (everything it
//! serves, and its methods such as `put_object`, `client` and `store`, are
//! reached through `Deref`) with a front that counts and fails requests.
//!
//! Tests steer it with [`Faults`] (delays, dropped or stalled watch events,
//! closed watches, injected 410/429/500, going down and coming back on the
//! same port) and read [`Stats`] (requests and bytes by verb and resource,
//! open watches). [`hostile`] has the hostile clients (slowloris, silent,
//! idle) of the connection-limit tests.
//!
//! ```no_run
//! # async fn demo() {
//! use kube::api::{Api, DynamicObject, PostParams};
//! let api = testkit::TestApi::start().await;
//! let hso: Api<DynamicObject> = Api::namespaced_with(api.client(), "default", &testkit::httpscaledobject_resource());
//! # let _ = hso;
//! # }
//! ```

mod faults;
pub mod fixtures;
pub mod hostile;
mod stats;

use std::path::Path;
use std::sync::Arc;

use apiserver::{ApiServer, ApiServerBuilder};
use listwatch::Store;

pub use apiserver::{
    ApiError, LoadError, ResourceDef, Verb, builtin_resources, httpscaledobject_resource,
    kubeconfig_yaml,
};
pub use faults::{FailOn, Faults};
pub use stats::{CountedBody, Stats};

use faults::FaultState;
use stats::StatsState;

/// Starts an [`ApiServerBuilder`]'s server as a [`TestApi`]: the same
/// options, with fault injection and counters in front.
pub trait StartTestApi {
    /// Starts serving, with fault injection and counters in front.
    fn start_test(self) -> impl std::future::Future<Output = std::io::Result<TestApi>> + Send;

    /// [`start_test`](StartTestApi::start_test) for a test: panics if the
    /// server cannot start.
    fn started(self) -> impl std::future::Future<Output = TestApi> + Send;
}

impl StartTestApi for ApiServerBuilder {
    /// Starts serving, with fault injection and counters in front.
    async fn start_test(self) -> std::io::Result<TestApi> {
        let faults = Arc::new(FaultState::default());
        let stats = Arc::new(StatsState::default());
        let front = faults::TestFront {
            faults: faults.clone(),
            stats: stats.clone(),
        };
        let server = self.watch_policy(faults.clone()).start_with(front).await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig())?;
        Ok(TestApi {
            server,
            faults,
            stats,
            kubeconfig,
            _dir: dir,
        })
    }

    async fn started(self) -> TestApi {
        self.start_test()
            .await
            .expect("testkit: cannot start the test API server")
    }
}

/// A running test API server; stops when dropped. Everything the product
/// server does is reached through `Deref` ([`ApiServer`]'s methods); this
/// adds [`faults`](TestApi::faults), [`stats`](TestApi::stats) and a
/// kubeconfig file.
pub struct TestApi {
    server: ApiServer,
    faults: Arc<FaultState>,
    stats: Arc<StatsState>,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApi").field("url", &self.url()).finish()
    }
}

impl std::ops::Deref for TestApi {
    type Target = ApiServer;

    fn deref(&self) -> &ApiServer {
        &self.server
    }
}

impl TestApi {
    /// Starts a server with default options on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> TestApi {
        TestApi::builder().started().await
    }

    /// Options: the product server's builder; start it with
    /// [`start_test`](StartTestApi::start_test) or, in a test,
    /// [`started`](StartTestApi::started).
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder::default()
    }

    /// A kubeconfig file (in a temp dir that lives as long as this handle).
    /// It carries the token if auth is on (used by kube-rs; kubectl does not
    /// send tokens over plain HTTP).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Fault injection.
    pub fn faults(&self) -> Faults {
        Faults {
            core: self.server.core().clone(),
            state: self.faults.clone(),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let open = self
            .server
            .core()
            .stores()
            .iter()
            .map(Store::watcher_count)
            .sum();
        self.stats.snapshot(open)
    }

    /// Zeroes the request and byte counters.
    pub fn reset_stats(&self) {
        self.stats.reset();
    }
}
