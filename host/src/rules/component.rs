//! Rules as a WebAssembly component, run by wasmtime in a sandbox: bounded memory,
//! a time budget per call, and WASI with no files, no network and no environment.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::contract::{Batch, BatchResult, Settings};
use sessionize_core::rules::{check_plugin_info, CheckScratch};

use super::sandbox::{clip, GuestOutput, LogBudget, Sandbox};
use super::wit::{self, host, types, SessionRules, SessionRulesPre};
use super::{check_result, RulesError, RulesRuntime, Texts, TextsSent};

/// How often the epoch advances: the granularity of the per-call time budget.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Sandbox limits for one plugin instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Largest linear memory (and table) the instance may grow to.
    pub memory_bytes: usize,
    /// Longest one `process` call may run before it is interrupted.
    pub call_timeout: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self { memory_bytes: 64 << 20, call_timeout: Duration::from_secs(5) }
    }
}

/// Compiles and instantiates rules components: a wasmtime engine set up for
/// them, with the thread that advances its epoch (the clock behind time
/// budgets). Compiling is the expensive part; share one loader per process.
pub struct ComponentLoader {
    engine: wasmtime::Engine,
    linker: Linker<PluginHost>,
    ticker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl ComponentLoader {
    /// An engine with epoch interruption and a WASI linker that grants nothing.
    pub fn new() -> Result<Self, RulesError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine =
            wasmtime::Engine::new(&config).map_err(|e| RulesError::Invalid(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RulesError::Invalid(e.to_string()))?;
        SessionRules::add_to_linker::<_, HasSelf<_>>(&mut linker, |host| host)
            .map_err(|e| RulesError::Invalid(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RulesError::Invalid(format!("cannot start epoch thread: {e}")))?
        };
        Ok(Self { engine, linker, ticker: Some(ticker), stop })
    }

    /// Compiles and checks a component from a file.
    pub fn load_file(
        self: &Arc<Self>,
        path: &Path,
        settings: &Settings,
        limits: SandboxLimits,
    ) -> Result<ComponentRules, RulesError> {
        let bytes = std::fs::read(path)
            .map_err(|source| RulesError::Read { path: path.display().to_string(), source })?;
        self.load(&bytes, settings, limits)
    }

    /// Compiles a component, instantiates it, and configures it with `settings`:
    /// a plugin that fails any step is refused before it sees an event.
    pub fn load(
        self: &Arc<Self>,
        bytes: &[u8],
        settings: &Settings,
        limits: SandboxLimits,
    ) -> Result<ComponentRules, RulesError> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| RulesError::Invalid(format!("{e:#}")))?;
        // Resolves imports now: a component that needs more than WASI and the
        // host log is refused here, not on its first batch.
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(SessionRulesPre::new)
            .map_err(|e| RulesError::Invalid(format!("{e:#}")))?;
        let hash = hex::encode(&Sha256::digest(bytes)[..6]);
        let mut rules = ComponentRules {
            loader: self.clone(),
            pre,
            settings: wit::settings_to_wit(settings),
            limits,
            instance: None,
            rule_version: String::new(),
            texts_sent: TextsSent::default(),
            scratch: wit::empty_batch(),
            check: CheckScratch::default(),
            log_lines_dropped: Arc::default(),
        };
        let instance = rules.instance()?;
        let info = instance.info()?;
        // The name and version go into every row and snapshot summary.
        check_plugin_info(&info.name, &info.version)?;
        let rule_version = format!("{}@{}+{hash}", info.name, info.version);
        instance.store.data_mut().plugin = Arc::from(rule_version.as_str());
        instance.log_output(false);
        rules.rule_version = rule_version;
        Ok(rules)
    }
}

impl Drop for ComponentLoader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// What a plugin instance's store holds: its sandboxed WASI and its limits.
struct PluginHost {
    wasi: WasiCtx,
    output: GuestOutput,
    table: ResourceTable,
    limits: StoreLimits,
    /// The rule version, for the log; empty while the plugin is being loaded.
    plugin: Arc<str>,
    /// Lines the plugin may still log in this call.
    log_budget: LogBudget,
}

impl WasiView for PluginHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for PluginHost {}

impl host::Host for PluginHost {
    fn log(&mut self, level: types::LogLevel, message: String) {
        if !self.log_budget.take() {
            return;
        }
        let plugin = &*self.plugin;
        let message = clip(&message);
        match level {
            types::LogLevel::Error => tracing::error!(plugin, "{message}"),
            types::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            types::LogLevel::Info => tracing::info!(plugin, "{message}"),
            types::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            types::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
        }
    }
}

/// A live, configured instance.
struct Instance {
    store: Store<PluginHost>,
    bindings: SessionRules,
    limits: SandboxLimits,
}

impl Instance {
    fn info(&mut self) -> Result<types::PluginInfo, RulesError> {
        self.arm();
        let rules = self.bindings.sessionize_plugin_rules();
        let info = rules.call_info(&mut self.store).map_err(|e| classify(e, self.limits));
        self.log_output(info.is_err());
        info
    }

    /// Passes what the plugin printed on to the host log, and ends the call's
    /// log budget. While a plugin is being loaded its output waits for its
    /// name, unless loading `failed`.
    fn log_output(&mut self, failed: bool) {
        let host = self.store.data_mut();
        let plugin = if !host.plugin.is_empty() {
            host.plugin.clone()
        } else if failed {
            Arc::from("plugin being loaded")
        } else {
            return;
        };
        host.output.log(&plugin, &mut host.log_budget);
        host.log_budget.end_call(&plugin);
    }

    /// Sets the time budget for the next call.
    fn arm(&mut self) {
        self.store.set_epoch_deadline(deadline_ticks(self.limits));
    }
}

/// Rules in a WebAssembly component.
pub struct ComponentRules {
    loader: Arc<ComponentLoader>,
    pre: SessionRulesPre<PluginHost>,
    settings: types::Settings,
    limits: SandboxLimits,
    /// `None` after a trap: rebuilt on the next call.
    instance: Option<Instance>,
    rule_version: String,
    /// What the instance's text table holds.
    texts_sent: TextsSent,
    /// Where each batch is built in the generated form.
    scratch: types::Batch,
    /// The buffers of the checks every answer gets.
    check: CheckScratch,
    /// Log lines dropped over the budget, by every instance so far.
    log_lines_dropped: Arc<AtomicU64>,
}

impl ComponentRules {
    /// Log lines the plugin sent beyond its budget per call, and the host
    /// dropped, since the rules were loaded.
    pub fn log_lines_dropped(&self) -> u64 {
        self.log_lines_dropped.load(Ordering::Relaxed)
    }

    /// The instance, building and configuring a fresh one if the last trapped.
    fn instance(&mut self) -> Result<&mut Instance, RulesError> {
        if self.instance.is_none() {
            self.texts_sent = TextsSent::default();
            let sandbox = Sandbox::new();
            let host = PluginHost {
                wasi: sandbox.wasi,
                output: sandbox.output,
                table: ResourceTable::new(),
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory_bytes)
                    .table_elements(1 << 20)
                    .instances(16)
                    .trap_on_grow_failure(true)
                    .build(),
                plugin: Arc::from(self.rule_version.as_str()),
                log_budget: LogBudget::new(self.log_lines_dropped.clone()),
            };
            let mut store = Store::new(&self.loader.engine, host);
            store.limiter(|host| &mut host.limits);
            store.epoch_deadline_trap();
            // Instantiation runs guest code too (start functions): budget it.
            store.set_epoch_deadline(deadline_ticks(self.limits));
            let bindings = self
                .pre
                .instantiate(&mut store)
                .map_err(|e| RulesError::Invalid(format!("{e:#}")))?;
            let mut instance = Instance { store, bindings, limits: self.limits };
            instance.arm();
            let configured = instance
                .bindings
                .sessionize_plugin_rules()
                .call_configure(&mut instance.store, &self.settings);
            instance.log_output(!matches!(configured, Ok(Ok(()))));
            configured.map_err(|e| classify(e, self.limits))?.map_err(RulesError::Refused)?;
            self.instance = Some(instance);
        }
        self.instance.as_mut().ok_or_else(|| RulesError::Trapped("no instance".into()))
    }
}

impl RulesRuntime for ComponentRules {
    fn rule_version(&self) -> &str {
        &self.rule_version
    }

    fn process(&mut self, texts: Texts<'_>, batch: &mut Batch) -> Result<BatchResult, RulesError> {
        let limits = self.limits;
        if self.texts_sent.is_stale(texts) {
            // The only way to empty an instance's table (and give back its
            // memory) is a fresh instance.
            self.instance = None;
        }
        // Build first: a rebuilt instance starts with an empty text table.
        self.instance()?;
        let Some(instance) = self.instance.as_mut() else {
            return Err(RulesError::Trapped("instance vanished".into()));
        };
        batch.new_texts = self.texts_sent.unsent(texts);
        instance.arm();
        let outcome = wit::lend(batch, &mut self.scratch, |batch| {
            instance.bindings.sessionize_plugin_rules().call_process(&mut instance.store, batch)
        });
        // Before a trap drops the instance: a panic message is on stderr.
        instance.log_output(outcome.is_err());
        match outcome {
            Ok(Ok(result)) => {
                // The guest answered, so its table took the new texts, whether
                // or not the answer passes.
                self.texts_sent.took(texts);
                let result = wit::result_from_wit(result);
                check_result(&mut self.check, texts, batch, &result)?;
                Ok(result)
            }
            Ok(Err(message)) => {
                // The guest answered, so its table did take the new texts.
                self.texts_sent.took(texts);
                Err(RulesError::Failed(message))
            }
            Err(e) => {
                self.instance = None;
                Err(classify(e, limits))
            }
        }
    }

    fn release_instance(&mut self) {
        self.instance = None;
        self.scratch = wit::empty_batch();
    }

    fn warm_up(&mut self) -> Result<(), RulesError> {
        self.instance().map(|_| ())
    }
}

fn deadline_ticks(limits: SandboxLimits) -> u64 {
    let ticks = limits.call_timeout.as_millis() / EPOCH_TICK.as_millis();
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

/// Turns a wasmtime error into what went wrong, in the plugin author's terms.
fn classify(error: wasmtime::Error, limits: SandboxLimits) -> RulesError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RulesError::Timeout(limits.call_timeout),
        _ => {
            let text = format!("{error:#}");
            if text.contains("forcing trap when growing memory") {
                RulesError::OutOfMemory(limits.memory_bytes >> 20)
            } else {
                RulesError::Trapped(text)
            }
        }
    }
}
