//! Compiled components kept on disk, so that a restart, or a deploy of rules
//! this job ran before, does not pay for compiling again (seconds for the
//! Python rules).
//!
//! An entry is named by the component's SHA-256 and by a hash of everything
//! that decides the machine code: wasmtime's version, its settings and the
//! CPU features it compiles for (`Engine::precompile_compatibility_hash`). A
//! new binary or another CPU therefore misses instead of loading code not
//! made for it. An entry starts with the SHA-256 of the rest, so a torn or
//! damaged file is compiled again, never loaded. Loading machine code trusts
//! the directory as much as the binary: it is created private (0700), in the
//! job's state directory, and a directory or an entry that is not this user's
//! own, or that others may write, is not used (as ssh treats its keys).
//! wasmtime's own cache (its `cache` feature) checks neither, so it is not
//! used: the state directory is not trusted.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// Entries kept; the least recently used beyond them are removed.
const KEEP: usize = 16;

/// The directory of compiled components for one wasmtime engine.
pub(crate) struct CompiledCache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash: part of every entry's name.
    engine_key: String,
}

impl CompiledCache {
    /// Opens (creating, private) `dir` for `engine`'s compiled components.
    pub(crate) fn open(dir: &Path, engine: &wasmtime::Engine) -> std::io::Result<Self> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let meta = fs::symlink_metadata(dir)?;
        if !meta.is_dir() || !private(&meta) {
            return Err(std::io::Error::other(
                "not a directory of this user's that only it may write: make it so (chmod 700), \
                 or remove it and the job makes it",
            ));
        }
        let mut hasher = Sha256Hasher::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..12]);
        Ok(Self { dir: dir.to_owned(), engine_key })
    }

    fn path(&self, component: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}-{}.cwasm", hex::encode(component), self.engine_key))
    }

    /// The compiled form of the component whose SHA-256 is `component`, if
    /// an intact entry made by a compatible engine holds it.
    pub(crate) fn get(&self, engine: &wasmtime::Engine, component: &[u8; 32]) -> Option<Component> {
        let path = self.path(component);
        let mut file = fs::File::open(&path).ok()?;
        // The opened file's own metadata: no swap between the check and the read.
        if !file.metadata().is_ok_and(|meta| meta.is_file() && private(&meta)) {
            tracing::warn!(path = %path.display(), "compiled component not this user's own, or writable by others; compiling again");
            return None;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        let intact = bytes.len() > 32 && Sha256::digest(&bytes[32..])[..] == bytes[..32];
        if !intact {
            tracing::warn!(path = %path.display(), "compiled component damaged; compiling again");
            return None;
        }
        // SAFETY: wasmtime loads this as machine code. The bytes are the ones
        // `put` wrote (the digest rules out a torn or damaged file) into a
        // private directory, for an engine with the same compatibility hash;
        // wasmtime checks its version and settings again while loading.
        match unsafe { Component::deserialize(engine, &bytes[32..]) } {
            Ok(compiled) => {
                // Recently used entries are the ones kept.
                let _ = fs::File::open(&path)
                    .and_then(|file| file.set_modified(std::time::SystemTime::now()));
                Some(compiled)
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "compiled component refused; compiling again");
                None
            }
        }
    }

    /// Keeps `compiled` (`Engine::precompile_component`'s output) for the
    /// component whose SHA-256 is `component`. Failing only costs a compile
    /// next time: it is logged, not returned.
    pub(crate) fn put(&self, component: &[u8; 32], compiled: &[u8]) {
        let path = self.path(component);
        if let Err(error) = self.write(&path, compiled) {
            tracing::warn!(path = %path.display(), %error, "cannot keep the compiled component");
            return;
        }
        self.prune(&path);
    }

    fn write(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        // Written aside, then renamed: a reader sees the whole entry or none.
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(&Sha256::digest(compiled))?;
        file.write_all(compiled)?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Removes the least recently used entries beyond [`KEEP`], never `newest`
    /// (its time may equal older ones').
    fn prune(&self, newest: &Path) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let mut kept: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
            .filter(|entry| entry.path() != newest)
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        if kept.len() < KEEP {
            return;
        }
        kept.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.0));
        for (_, path) in kept.drain(KEEP - 1..) {
            let _ = fs::remove_file(path);
        }
    }
}

/// Whether only this process's user owns and may write what `meta` describes.
#[cfg(unix)]
fn private(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    meta.uid() == user && meta.mode() & 0o022 == 0
}

#[cfg(not(unix))]
fn private(_meta: &fs::Metadata) -> bool {
    true
}

/// Feeds `Hash` into SHA-256: unlike std's hashers, the same on every build.
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> wasmtime::Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        wasmtime::Engine::new(&config).unwrap()
    }

    /// The smallest component there is.
    fn component() -> Vec<u8> {
        wasm_encoder::Component::new().finish()
    }

    #[test]
    fn an_entry_is_found_again_and_a_damaged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompiledCache::open(&dir.path().join("compiled"), &engine).unwrap();
        let bytes = component();
        let key: [u8; 32] = Sha256::digest(&bytes).into();
        assert!(cache.get(&engine, &key).is_none());
        cache.put(&key, &engine.precompile_component(&bytes).unwrap());
        assert!(cache.get(&engine, &key).is_some());

        let path = cache.path(&key);
        let mut damaged = fs::read(&path).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        fs::write(&path, &damaged).unwrap();
        assert!(cache.get(&engine, &key).is_none());
        fs::write(&path, b"short").unwrap();
        assert!(cache.get(&engine, &key).is_none());
    }

    #[test]
    fn an_entry_or_a_directory_others_may_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompiledCache::open(&dir.path().join("compiled"), &engine).unwrap();
        let bytes = component();
        let key: [u8; 32] = Sha256::digest(&bytes).into();
        cache.put(&key, &engine.precompile_component(&bytes).unwrap());
        let path = cache.path(&key);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(cache.get(&engine, &key).is_none());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(cache.get(&engine, &key).is_some());

        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let refused = CompiledCache::open(&open, &engine).err().unwrap();
        assert!(refused.to_string().contains("chmod 700"), "{refused}");
    }

    #[test]
    fn another_engine_setting_misses() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        let bytes = component();
        let key: [u8; 32] = Sha256::digest(&bytes).into();
        cache.put(&key, &engine.precompile_component(&bytes).unwrap());

        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let other = wasmtime::Engine::new(&config).unwrap();
        let other_cache = CompiledCache::open(dir.path(), &other).unwrap();
        assert_ne!(cache.engine_key, other_cache.engine_key);
        assert!(other_cache.get(&other, &key).is_none());
    }

    #[test]
    fn only_the_most_recently_used_entries_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        let compiled = engine.precompile_component(&component()).unwrap();
        for i in 0..KEEP + 3 {
            cache.put(&[i as u8; 32], &compiled);
        }
        let entries = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, KEEP);
        let newest = [(KEEP + 2) as u8; 32];
        assert!(cache.get(&engine, &newest).is_some(), "the entry just written is kept");
    }
}
