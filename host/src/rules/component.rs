//! Rules as a WebAssembly component, run by wasmtime in a sandbox: bounded memory,
//! a time budget per call, and WASI with no files, no network and no environment.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::compiled::CompiledCache;
use super::contract::{Batch, BatchResult, Declarations, Settings};
use sessionize_core::rules::{
    check_declarations, check_plugin_info, CheckScratch, NO_DECLARATIONS,
};

use super::sandbox::{clip, GuestOutput, LogBudget, PluginLimits, Sandbox, MAX_MEMORIES};
use super::wit::{convert01, convert02, v01, v02};
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
    /// Where compiled components are kept between runs, if anywhere.
    compiled: Option<CompiledCache>,
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
        v02::SessionRules::add_to_linker::<_, HasSelf<_>>(&mut linker, |host| host)
            .map_err(|e| RulesError::Invalid(e.to_string()))?;
        v01::SessionRules::add_to_linker::<_, HasSelf<_>>(&mut linker, |host| host)
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
        Ok(Self { engine, linker, compiled: None, ticker: Some(ticker), stop })
    }

    /// Keeps compiled components in `dir`, so that loading one this
    /// directory has seen skips compiling. A directory that cannot be made
    /// only costs the saving (logged).
    pub fn keeping_compiled_in(mut self, dir: &Path) -> Self {
        match CompiledCache::open(dir, &self.engine) {
            Ok(cache) => self.compiled = Some(cache),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "compiled components not kept")
            }
        }
        self
    }

    /// The component compiled, or as kept from an earlier compile.
    fn compile(&self, bytes: &[u8], digest: &[u8; 32]) -> Result<Component, RulesError> {
        let invalid = |e: wasmtime::Error| RulesError::Invalid(format!("{e:#}"));
        let Some(cache) = &self.compiled else {
            return Component::new(&self.engine, bytes).map_err(invalid);
        };
        if let Some(component) = cache.get(&self.engine, digest) {
            return Ok(component);
        }
        let compiled = self.engine.precompile_component(bytes).map_err(invalid)?;
        // SAFETY: machine code this engine compiled a moment ago, in memory.
        let component =
            unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(invalid)?;
        cache.put(digest, &compiled);
        Ok(component)
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
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let component = self.compile(bytes, &digest)?;
        check_resources(&component)?;
        // Resolves imports now: a component that needs more than WASI and the
        // host log is refused here, not on its first batch.
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| RulesError::Invalid(format!("{e:#}")))?;
        let pre = match v02::SessionRulesPre::new(pre.clone()) {
            Ok(pre) => Pre::V02(pre),
            Err(newer) => match v01::SessionRulesPre::new(pre) {
                Ok(pre) => Pre::V01(pre),
                Err(_) => {
                    return Err(RulesError::Invalid(format!(
                        "{newer:#} (nor does it export contract 0.1's)"
                    )))
                }
            },
        };
        let hash = hex::encode(&digest[..6]);
        let mut rules = ComponentRules::unstarted(self.clone(), pre, settings.clone(), limits);
        let instance = rules.instance()?;
        let (name, version) = instance.info()?;
        // The name and version go into every row and snapshot summary.
        check_plugin_info(&name, &version)?;
        let rule_version = format!("{name}@{version}+{hash}");
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
    limits: PluginLimits,
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

impl PluginHost {
    fn log(&mut self, level: tracing::Level, message: String) {
        if !self.log_budget.take() {
            return;
        }
        let plugin = &*self.plugin;
        let message = clip(&message);
        match level {
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
        }
    }
}

impl v02::sessionize::plugin::types::Host for PluginHost {}

impl v02::sessionize::plugin::host::Host for PluginHost {
    fn log(&mut self, level: v02::sessionize::plugin::types::LogLevel, message: String) {
        PluginHost::log(self, convert02::log_level(level), message);
    }
}

impl v01::sessionize::plugin::types::Host for PluginHost {}

impl v01::sessionize::plugin::host::Host for PluginHost {
    fn log(&mut self, level: v01::sessionize::plugin::types::LogLevel, message: String) {
        PluginHost::log(self, convert01::log_level(level), message);
    }
}

/// A component ready to instantiate, by the contract version it exports.
#[derive(Clone)]
enum Pre {
    V02(v02::SessionRulesPre<PluginHost>),
    V01(v01::SessionRulesPre<PluginHost>),
}

impl Pre {
    /// Where batches for an instance of it are built.
    fn empty_scratch(&self) -> Scratch {
        match self {
            Pre::V02(_) => Scratch::V02(convert02::empty_batch()),
            Pre::V01(_) => Scratch::V01(convert01::empty_batch()),
        }
    }
}

/// An instance's exports, by contract version.
enum Bindings {
    V02(v02::SessionRules),
    V01(v01::SessionRules),
}

/// Where batches are built in the generated form, by contract version.
enum Scratch {
    V02(v02::sessionize::plugin::types::Batch),
    V01(v01::sessionize::plugin::types::Batch),
}

/// A live, configured instance.
struct Instance {
    store: Store<PluginHost>,
    bindings: Bindings,
    limits: SandboxLimits,
}

impl Instance {
    /// The plugin's name and version.
    fn info(&mut self) -> Result<(String, String), RulesError> {
        self.arm();
        let info = match &self.bindings {
            Bindings::V02(b) => {
                b.sessionize_plugin_rules().call_info(&mut self.store).map(|i| (i.name, i.version))
            }
            Bindings::V01(b) => {
                b.sessionize_plugin_rules().call_info(&mut self.store).map(|i| (i.name, i.version))
            }
        };
        let info = info.map_err(|e| classify(e, self.limits));
        self.log_output(info.is_err());
        info
    }

    /// Configures the instance: what it declares (nothing, for 0.1), or why
    /// it refused.
    fn configure(&mut self, settings: &Settings) -> Result<Declarations, RulesError> {
        self.arm();
        let configured = match &self.bindings {
            Bindings::V02(b) => b
                .sessionize_plugin_rules()
                .call_configure(&mut self.store, &convert02::settings_to_wit(settings))
                .map(|r| r.map(convert02::declarations_from_wit)),
            Bindings::V01(b) => b
                .sessionize_plugin_rules()
                .call_configure(&mut self.store, &convert01::settings_to_wit(settings))
                .map(|r| r.map(|()| Declarations::default())),
        };
        self.log_output(!matches!(configured, Ok(Ok(_))));
        configured.map_err(|e| classify(e, self.limits))?.map_err(RulesError::Refused)
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
    pre: Pre,
    settings: Settings,
    limits: SandboxLimits,
    /// `None` after a trap: rebuilt on the next call.
    instance: Option<Instance>,
    rule_version: String,
    /// What the first instance declared; every later one must declare the same.
    declarations: Option<Declarations>,
    /// What the instance's text table holds.
    texts_sent: TextsSent,
    /// Where each batch is built in the generated form.
    scratch: Scratch,
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

    /// The same rules in an instance of their own, configured alike, for
    /// another engine (a bounded run splits its users over an engine per
    /// core). Nothing is compiled again; the instance must declare what
    /// this one's did.
    pub fn another_instance(&self) -> Result<ComponentRules, RulesError> {
        let mut rules = ComponentRules::unstarted(
            self.loader.clone(),
            self.pre.clone(),
            self.settings.clone(),
            self.limits,
        );
        rules.rule_version.clone_from(&self.rule_version);
        rules.declarations.clone_from(&self.declarations);
        rules.log_lines_dropped = self.log_lines_dropped.clone();
        rules.instance()?;
        Ok(rules)
    }

    /// Rules of `pre` with no instance yet, no identity and no declarations.
    fn unstarted(
        loader: Arc<ComponentLoader>,
        pre: Pre,
        settings: Settings,
        limits: SandboxLimits,
    ) -> Self {
        ComponentRules {
            loader,
            scratch: pre.empty_scratch(),
            pre,
            settings,
            limits,
            instance: None,
            rule_version: String::new(),
            declarations: None,
            texts_sent: TextsSent::default(),
            check: CheckScratch::default(),
            log_lines_dropped: Arc::default(),
        }
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
                limits: PluginLimits::new(self.limits.memory_bytes),
                plugin: Arc::from(self.rule_version.as_str()),
                log_budget: LogBudget::new(self.log_lines_dropped.clone()),
            };
            let mut store = Store::new(&self.loader.engine, host);
            store.limiter(|host| &mut host.limits);
            store.epoch_deadline_trap();
            // Instantiation runs guest code too (start functions): budget it.
            store.set_epoch_deadline(deadline_ticks(self.limits));
            let bindings = match &self.pre {
                Pre::V02(pre) => pre.instantiate(&mut store).map(Bindings::V02),
                Pre::V01(pre) => pre.instantiate(&mut store).map(Bindings::V01),
            }
            .map_err(|e| RulesError::Invalid(format!("{e:#}")))?;
            let mut instance = Instance { store, bindings, limits: self.limits };
            let declared = instance.configure(&self.settings)?;
            match &self.declarations {
                None => {
                    check_declarations(&declared)?;
                    self.declarations = Some(declared);
                }
                Some(first) if *first != declared => {
                    return Err(RulesError::Declarations(
                        "a new instance declared other fields or attributes than the first".into(),
                    ))
                }
                Some(_) => {}
            }
            self.instance = Some(instance);
        }
        self.instance.as_mut().ok_or_else(|| RulesError::Trapped("no instance".into()))
    }
}

impl RulesRuntime for ComponentRules {
    fn rule_version(&self) -> &str {
        &self.rule_version
    }

    fn declarations(&self) -> &Declarations {
        self.declarations.as_ref().unwrap_or(&NO_DECLARATIONS)
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
        let store = &mut instance.store;
        let outcome = match (&instance.bindings, &mut self.scratch) {
            (Bindings::V02(b), Scratch::V02(scratch)) => convert02::lend(batch, scratch, |batch| {
                let result = b.sessionize_plugin_rules().call_process(&mut *store, batch);
                result.map(|r| r.map(convert02::result_from_wit))
            }),
            (Bindings::V01(b), Scratch::V01(scratch)) => convert01::lend(batch, scratch, |batch| {
                let result = b.sessionize_plugin_rules().call_process(&mut *store, batch);
                result.map(|r| r.map(convert01::result_from_wit))
            }),
            _ => {
                return Err(RulesError::Trapped(
                    "instance and scratch disagree on the contract".into(),
                ))
            }
        };
        // Before a trap drops the instance: a panic message is on stderr.
        instance.log_output(outcome.is_err());
        let crowded = matches!(outcome, Ok(Ok(_))) && instance.store.data_mut().limits.answered();
        match outcome {
            Ok(Ok(result)) => {
                // The guest answered, so its table took the new texts, whether
                // or not the answer passes.
                self.texts_sent.took(texts);
                if crowded {
                    // A runtime whose collector lags (JavaScript's) grows
                    // with every call; a fresh instance gives the memory back
                    // before it meets the limit mid-run (the contract lets
                    // the host replace an instance between any two calls).
                    tracing::debug!(plugin = %self.rule_version, "instance replaced: over half its memory limit");
                    self.instance = None;
                }
                let declared = self.declarations.as_ref().unwrap_or(&NO_DECLARATIONS);
                check_result(&mut self.check, texts, declared, batch, &result)?;
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
        self.scratch = self.pre.empty_scratch();
    }

    fn warm_up(&mut self) -> Result<(), RulesError> {
        self.instance().map(|_| ())
    }
}

/// Refuses a component whose modules define more memories than an instance
/// may have, before anything of it runs.
fn check_resources(component: &Component) -> Result<(), RulesError> {
    let Some(needs) = component.resources_required() else { return Ok(()) };
    if needs.num_memories as usize > MAX_MEMORIES {
        return Err(RulesError::Invalid(format!(
            "the component defines {} memories; a plugin may have at most {MAX_MEMORIES} \
             (its memory limit counts them together)",
            needs.num_memories
        )));
    }
    Ok(())
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
