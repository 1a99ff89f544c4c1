//! The set of profiles a deployment knows: the built-ins, compiled into the binary from
//! `profiles/*.toml` and read by the same loader as user files, plus a directory of the
//! operator's own files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ProfileError;
use crate::profile::CarrierProfile;

/// The built-in profiles: (name, TOML text). Embedded so a binary needs no files to start.
const BUILTIN: [(&str, &str); 9] = [
    ("starshipit", include_str!("../profiles/starshipit.toml")),
    ("clickpost", include_str!("../profiles/clickpost.toml")),
    ("aftership", include_str!("../profiles/aftership.toml")),
    ("easypost", include_str!("../profiles/easypost.toml")),
    ("waybill", include_str!("../profiles/waybill.toml")),
    ("sendcloud", include_str!("../profiles/sendcloud.toml")),
    (
        "track123-app",
        include_str!("../profiles/track123-app.toml"),
    ),
    ("17track", include_str!("../profiles/17track.toml")),
    ("ship24", include_str!("../profiles/ship24.toml")),
];

/// Profiles by name. Cheap to clone the profiles out of (`Arc`).
#[derive(Debug, Clone, Default)]
pub struct ProfileRegistry {
    profiles: BTreeMap<String, Arc<CarrierProfile>>,
}

impl ProfileRegistry {
    /// The built-in profiles: starshipit, clickpost, aftership, easypost, waybill, sendcloud,
    /// track123-app, 17track, ship24.
    ///
    /// # Panics
    /// Never in a released build: every built-in is parsed by the test suite
    /// (`builtin_profiles_load`), so a broken one fails CI, not production.
    pub fn builtin() -> Self {
        let mut registry = ProfileRegistry::default();
        for (name, text) in BUILTIN {
            let origin = format!("builtin:{name}");
            match CarrierProfile::from_toml(&origin, text) {
                Ok(profile) => registry.insert(profile),
                Err(error) => panic!("built-in carrier profile is broken: {error}"),
            }
        }
        registry
    }

    /// The built-ins plus every `*.toml` file in `dir` (not recursive), read in name order.
    /// A file whose profile name equals a built-in's replaces it; two files with the same
    /// profile name are an error.
    pub fn with_dir(dir: &Path) -> Result<Self, ProfileError> {
        let io_error = |source| ProfileError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_error)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()
            .map_err(io_error)?;
        paths.retain(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file());
        paths.sort();

        let mut registry = ProfileRegistry::builtin();
        let mut loaded_from: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in paths {
            let profile = Self::load_file(&path)?;
            if let Some(first) = loaded_from.insert(profile.name.clone(), path.clone()) {
                return Err(ProfileError::Duplicate {
                    name: profile.name,
                    first,
                    second: path,
                });
            }
            registry.insert(profile);
        }
        Ok(registry)
    }

    /// Reads and checks one profile file.
    pub fn load_file(path: &Path) -> Result<CarrierProfile, ProfileError> {
        CarrierProfile::from_file(path)
    }

    /// Adds a profile, replacing any of the same name.
    pub fn insert(&mut self, profile: CarrierProfile) {
        self.profiles
            .insert(profile.name.clone(), Arc::new(profile));
    }

    /// The profile called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<CarrierProfile>> {
        self.profiles.get(name).cloned()
    }

    /// Every profile name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }
}
