//! The rules and guards of SPEC section 3: what the file asks for, compared with what was
//! recorded.

use super::*;

impl Planner<'_> {
    pub(super) fn instances(&mut self) {
        for (name, inst) in self.cfg_instances() {
            let address = format!("instance.{name}");
            // Not recorded, or its creation failed: created (again).
            let Some(r) = self.rec.instances.get(name).filter(|r| !r.creation_failed) else {
                self.act(
                    Op::Create,
                    address,
                    Details::CreateInstance {
                        instance: name.clone(),
                        kind: inst.kind,
                        version: inst.version.clone(),
                        source: inst.source.clone(),
                    },
                );
                continue;
            };
            if r.source.identity() != inst.source.identity() {
                self.refuse(
                    "source-changed",
                    address,
                    self.at(inst.source_loc),
                    format!(
                        "the source of `{name}` changed from {} to {}; a different store is a different instance",
                        r.source.describe(),
                        inst.source.describe()
                    ),
                    format!(
                        "put the old source back; to protect the other store, declare it as a new instance under another name (and remove `{name}` separately, switching it to sandbox first if it is production)"
                    ),
                );
                continue;
            }
            if r.source != inst.source {
                // The same store reached with other credentials: recorded, so that backups
                // of it (and of it once it leaves the file) use them.
                self.act(
                    Op::Update,
                    address.clone(),
                    Details::UpdateSource {
                        instance: name.clone(),
                        source: Change {
                            from: r.source.clone(),
                            to: inst.source.clone(),
                        },
                    },
                );
            }
            if r.kind != inst.kind {
                self.act(
                    Op::Switch,
                    address.clone(),
                    Details::SwitchInstance {
                        instance: name.clone(),
                        kind: Change {
                            from: r.kind,
                            to: inst.kind,
                        },
                    },
                );
            }
            if r.version != inst.version {
                if inst.version < r.version {
                    self.notes.push(format!(
                        "{address}: the version goes down from {} to {}; `on_update` must know how to downgrade",
                        r.version, inst.version
                    ));
                }
                let on_update = inst
                    .on_update
                    .iter()
                    .map(|a| a.replace("{version}", inst.version.as_str()))
                    .collect();
                self.act(
                    Op::Update,
                    address,
                    Details::UpdateInstance {
                        instance: name.clone(),
                        version: Change {
                            from: r.version.clone(),
                            to: inst.version.clone(),
                        },
                        // The same update planned again (after a crash) is the same backup.
                        pre_update_backup: id_of(&format!(
                            "pre-update/{name}/{}/{}/{}",
                            r.version,
                            inst.version,
                            r.updated_at.to_rfc3339()
                        )),
                        on_update,
                    },
                );
            }
        }
        for (name, r) in self.rec_instances() {
            if self.cfg.instances.contains_key(name) {
                continue;
            }
            let address = format!("instance.{name}");
            // One whose creation failed never held anything of backplan's: no guard.
            if r.kind == InstanceType::Production && !r.creation_failed {
                self.refuse(
                    "production-removal",
                    address,
                    self.file.clone(),
                    format!("production instance `{name}` is not in the file any more; a production instance cannot be removed in one step"),
                    format!("put [instances.{name}] back with `type = \"sandbox\"`, apply, then remove it"),
                );
                continue;
            }
            let kept = self.idx.by_instance.get(name.as_str()).map_or(0, |v| {
                v.iter()
                    .filter(|b| b.status != BackupStatus::Expired)
                    .count()
            });
            self.act(
                Op::Forget,
                address,
                Details::ForgetInstance {
                    instance: name.clone(),
                    backups_kept: kept,
                },
            );
        }
    }

    pub(super) fn backups(&mut self) {
        let cfg = self.cfg;
        for (name, inst) in self.cfg_instances() {
            for (key, decl) in &inst.backups {
                let address = format!("backup.{name}/{key}");
                let deleting = self
                    .idx
                    .deleting
                    .get(&(name.as_str(), key.as_str()))
                    .copied();
                match self.idx.on_demand.get(&(name.as_str(), key.as_str())).copied() {
                    // Put back before its data was deleted (same storage): the same backup.
                    None if deleting.is_some_and(|d| d.storage == decl.storage) => {
                        let d = deleting.expect("checked");
                        let change = |from: &String, to: &String| {
                            (from != to).then(|| Change {
                                from: from.clone(),
                                to: to.clone(),
                            })
                        };
                        self.act(
                            Op::Update,
                            address,
                            Details::ReviveBackup {
                                id: d.id,
                                instance: name.clone(),
                                key: key.clone(),
                                delete_at: d.delete_at,
                                label: change(&d.label, &decl.label),
                                notes: change(&d.notes, &decl.notes),
                            },
                        );
                    }
                    None => self.create_backup(inst, key, address),
                    Some(r) if r.storage != decl.storage => self.refuse(
                        "storage-changed",
                        address,
                        self.at(decl.storage_loc),
                        format!(
                            "backup `{name}/{key}` is stored in `{}`; its storage cannot change to `{}`",
                            r.storage, decl.storage
                        ),
                        format!(
                            "keep `storage = \"{}\"` here, and add a new backup key with `storage = \"{}\"`",
                            r.storage, decl.storage
                        ),
                    ),
                    Some(r) if r.status == BackupStatus::Expired => self.notes.push(format!(
                        "{address} expired{}; only its record is left. Remove it from the file, or add a new key to take a new backup.",
                        r.expires_at.map(|t| format!(" on {}", fmt_time(&t))).unwrap_or_default()
                    )),
                    Some(r) => {
                        let change = |from: &String, to: &String| {
                            (from != to).then(|| Change {
                                from: from.clone(),
                                to: to.clone(),
                            })
                        };
                        let label = change(&r.label, &decl.label);
                        let notes = change(&r.notes, &decl.notes);
                        if label.is_some() || notes.is_some() {
                            self.act(
                                Op::Update,
                                address,
                                Details::UpdateBackup {
                                    id: r.id,
                                    instance: name.clone(),
                                    key: key.clone(),
                                    label,
                                    notes,
                                },
                            );
                        }
                    }
                }
            }
        }
        // Backups removed from the file: they enter their deletion grace (the data is deleted
        // later, by time-driven work). One file lookup per instance, not per backup.
        let by_instance: Vec<(Option<&Instance>, &BackupRecord)> = self
            .idx
            .by_instance
            .iter()
            .flat_map(|(name, list)| {
                let inst = cfg.instances.get(*name);
                list.iter().map(move |b| (inst, *b))
            })
            .collect();
        for (inst, b) in by_instance {
            let (BackupKind::OnDemand, Some(key)) = (b.kind, &b.key) else {
                continue;
            };
            if matches!(b.status, BackupStatus::Deleting | BackupStatus::Deleted) {
                continue;
            }
            let removed = match inst {
                // The instance left the file: its backups stay and expire on schedule.
                None => false,
                Some(inst) => !inst.backups.contains_key(key),
            };
            if !removed {
                continue;
            }
            let data = if b.status == BackupStatus::Expired {
                DataFate::AlreadyExpired
            } else {
                data_fate(cfg, b)
            };
            let delete_at = (data != DataFate::AlreadyExpired)
                .then(|| self.now + cfg.schedule.deletion_grace.to_chrono());
            self.act(
                Op::Delete,
                format!("backup.{}/{key}", b.instance),
                Details::DeleteBackup {
                    id: b.id,
                    instance: b.instance.clone(),
                    key: key.clone(),
                    storage: b.storage.clone(),
                    data,
                    delete_at,
                },
            );
        }
    }

    pub(super) fn create_backup(&mut self, inst: &Instance, key: &str, address: String) {
        let decl = &inst.backups[key];
        if let Some(min) = &self.cfg.schedule.min_backup_version
            && &inst.version < min
        {
            self.refuse(
                "min-backup-version",
                address,
                self.at(decl.loc),
                format!(
                    "on-demand backups need version {min} or later; `{}` is at {}",
                    inst.name, inst.version
                ),
                format!(
                    "update `{}` to {min} or later first, or lower `min_backup_version`",
                    inst.name
                ),
            );
            return;
        }
        let storage = &self.cfg.storages[&decl.storage];
        self.act(
            Op::Create,
            address,
            Details::CreateBackup {
                id: id_of(&format!(
                    "on-demand/{}/{key}/{}",
                    inst.name,
                    self.now.to_rfc3339()
                )),
                instance: inst.name.clone(),
                key: key.to_string(),
                label: decl.label.clone(),
                notes: decl.notes.clone(),
                storage: decl.storage.clone(),
                expires_at: expiry(storage.retention, self.now),
            },
        );
    }

    pub(super) fn restores(&mut self, expiring: &BTreeSet<Uuid>) {
        let cfg = self.cfg;
        let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, r) in &cfg.restores {
            let address = format!("restore.{key}");
            if let Some(done) = self.rec.restores.get(key) {
                // Compared as references, so `from` written with another letter case of the
                // same UUID is the same restore.
                let same_from = BackupRef::parse(&done.from).is_ok_and(|f| f == r.from);
                if !same_from || done.to != r.to {
                    self.refuse(
                        "restore-immutable",
                        address,
                        self.at(r.loc),
                        format!(
                            "restore `{key}` already ran ({} into {}); a restore cannot be changed afterwards",
                            done.from, done.to
                        ),
                        format!("put `{key}` back as it was (or remove it), and add the new restore under a new key"),
                    );
                } else if done.status == RestoreStatus::Failed {
                    self.notes.push(format!(
                        "{address} failed{}{}; restores run once: add a new key to try again",
                        done.completed_at
                            .map(|t| format!(" at {}", fmt_time(&t)))
                            .unwrap_or_default(),
                        done.error
                            .as_ref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    ));
                }
                continue;
            }
            if let Some(other) = targets.insert(r.to.as_str(), key) {
                self.refuse(
                    "one-restore-per-target",
                    address,
                    self.at(r.loc),
                    format!("restores `{other}` and `{key}` both target `{}` in one plan; which one should win is not clear", r.to),
                    "add one restore, apply, then add the next".into(),
                );
                continue;
            }
            if let Err((rule, message, fix)) = self.restore(r, expiring) {
                let loc = match rule {
                    "restore-into-production" | "unknown-instance" => r.to_loc,
                    _ => r.from_loc,
                };
                self.refuse(rule, address, self.at(loc), message, fix);
            }
        }
    }

    /// Checks one new restore and plans it; on refusal returns (rule, message, fix).
    pub(super) fn restore(
        &mut self,
        r: &Restore,
        expiring: &BTreeSet<Uuid>,
    ) -> Result<(), (&'static str, String, String)> {
        let cfg = self.cfg;
        let Some(target) = cfg.instances.get(&r.to) else {
            return Err((
                "unknown-instance",
                format!("restore target `{}` is not an instance in the file", r.to),
                "name a sandbox instance declared under [instances]".into(),
            ));
        };
        // The file's type is the type after this plan's switches.
        if target.kind == InstanceType::Production {
            return Err((
                "restore-into-production",
                format!(
                    "`{}` is a production instance; only a sandbox can be the target of a restore",
                    r.to
                ),
                format!(
                    "restore into a sandbox instance, or switch `{}` to sandbox first",
                    r.to
                ),
            ));
        }
        let (backup, by_plan, source_kind) = self.resolve(&r.from, expiring)?;
        if source_kind != target.source.kind() {
            return Err((
                "kind-mismatch",
                format!(
                    "backup {} is of a {source_kind} instance and `{}` is a {} instance",
                    r.from,
                    r.to,
                    target.source.kind()
                ),
                "restore into a sandbox of the same kind".into(),
            ));
        }
        let deleted = self
            .actions
            .iter()
            .any(|a| matches!(a.details, Details::DeleteBackup { id, .. } if id == backup));
        if deleted {
            return Err((
                "backup-being-deleted",
                format!("backup {} is deleted by this same plan", r.from),
                "keep the backup in the file until the restore has run".into(),
            ));
        }
        self.act(
            Op::Restore,
            format!("restore.{}", r.key),
            Details::Restore {
                restore: r.key.clone(),
                from: r.from.to_string(),
                backup,
                backup_created_by_plan: by_plan,
                to: r.to.clone(),
                pre_restore_backup: id_of(&format!("pre-restore/{}", r.key)),
            },
        );
        Ok(())
    }

    /// Which backup a reference names: (id, taken by this plan, kind of store).
    pub(super) fn resolve(
        &self,
        from: &BackupRef,
        expiring: &BTreeSet<Uuid>,
    ) -> Result<(Uuid, bool, crate::config::SourceKind), (&'static str, String, String)> {
        let unknown = || {
            (
                "unknown-backup",
                format!("no recorded backup matches `{from}`"),
                "list the backups with `backplan backups` and name one that exists".to_string(),
            )
        };
        let of = |inst: &str| {
            self.idx
                .by_instance
                .get(inst)
                .map(Vec::as_slice)
                .unwrap_or(&[])
        };
        let found: Option<&BackupRecord> = match from {
            BackupRef::Id { id } => self.rec.backups.get(id),
            BackupRef::OnDemand { instance, key } => {
                match self.idx.on_demand.get(&(instance.as_str(), key.as_str())) {
                    Some(b) => Some(*b),
                    None => {
                        let planned = self.actions.iter().find_map(|a| match &a.details {
                            Details::CreateBackup {
                                id,
                                instance: i,
                                key: k,
                                ..
                            } if i == instance && k == key => Some(*id),
                            _ => None,
                        });
                        if let Some(id) = planned {
                            let kind = self.cfg.instances[instance].source.kind();
                            return Ok((id, true, kind));
                        }
                        None
                    }
                }
            }
            BackupRef::Latest { instance } => newest(
                of(instance)
                    .iter()
                    .filter(|b| b.status == BackupStatus::Completed && !expiring.contains(&b.id)),
            ),
            BackupRef::Daily { instance, date } => newest(
                of(instance)
                    .iter()
                    .filter(|b| b.kind == BackupKind::Daily && b.date == Some(*date)),
            ),
            BackupRef::PreUpdate { instance, version } => {
                // The pre-update backup of an update in this same plan is taken before restores.
                let planned = self.actions.iter().find_map(|a| match &a.details {
                    Details::UpdateInstance {
                        instance: i,
                        version: v,
                        pre_update_backup,
                        ..
                    } if i == instance && &v.to == version => Some(*pre_update_backup),
                    _ => None,
                });
                if let Some(id) = planned {
                    let kind = self.cfg.instances[instance].source.kind();
                    return Ok((id, true, kind));
                }
                newest(of(instance).iter().filter(|b| {
                    b.kind == BackupKind::PreUpdate && b.version.as_ref() == Some(version)
                }))
            }
        };
        let b = found.ok_or_else(unknown)?;
        if b.status == BackupStatus::Deleted {
            return Err((
                "backup-deleted",
                format!(
                    "backup {from} ({}) was removed from the file and its deletion grace has passed; its data is deleted",
                    b.id
                ),
                "restore from another backup; `backplan backups` lists them".into(),
            ));
        }
        let expired = b.status == BackupStatus::Expired || expiring.contains(&b.id);
        if expired {
            return Err((
                "backup-expired",
                format!("backup {from} ({}) has expired", b.id),
                "restore from a newer backup, like `<instance>@latest`".into(),
            ));
        }
        // A backup in its deletion grace is still restorable (by id) if it had completed.
        let status = match (b.status, b.status_before_delete) {
            (BackupStatus::Deleting, Some(before)) => before,
            (BackupStatus::Deleting, None) if b.snapshot_id.is_some() => BackupStatus::Completed,
            (status, _) => status,
        };
        match status {
            BackupStatus::Completed => {}
            BackupStatus::Failed => {
                return Err((
                    "backup-failed",
                    format!(
                        "backup {from} ({}) failed{}",
                        b.id,
                        b.error
                            .as_ref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                    "restore from a backup that completed; `backplan backups` lists them".into(),
                ));
            }
            BackupStatus::Skipped => {
                return Err((
                    "backup-not-taken",
                    format!(
                        "the daily slot {from} was missed while backplan was not running; no backup was taken"
                    ),
                    "restore from another backup; `backplan backups` lists them".into(),
                ));
            }
            other => {
                return Err((
                    "backup-not-ready",
                    format!("backup {from} ({}) is {other}, not completed", b.id),
                    "wait until the backup has completed, then apply again".into(),
                ));
            }
        }
        if let Some(storage) = self.cfg.storages.get(&b.storage) {
            if let (true, Some(age)) = (storage.is_external(), storage.max_restore_age)
                && self.now - b.created_at > age.to_chrono()
            {
                return Err((
                    "restore-too-old",
                    format!(
                        "backup {from} was taken {} and storage `{}` refuses restores of backups older than {age}",
                        fmt_time(&b.created_at),
                        b.storage
                    ),
                    "restore from a newer backup".into(),
                ));
            }
        } else {
            return Err((
                "unknown-storage",
                format!(
                    "backup {from} is in storage `{}`, which the file no longer declares",
                    b.storage
                ),
                format!("declare [storage.{}] again to restore from it", b.storage),
            ));
        }
        Ok((b.id, false, b.source_kind))
    }

    /// SPEC section 3: more than half of the instances forgotten, or more than half (and more
    /// than 2) of the on-demand backups deleted, is refused unless explicitly allowed.
    pub(super) fn mass_removal(&mut self, opts: PlanOptions) {
        let forgets = self.actions.iter().filter(|a| a.op == Op::Forget).count()
            + self
                .refusals
                .iter()
                .filter(|r| r.rule == "production-removal")
                .count();
        let instances = self.rec.instances.len();
        let deletes = self
            .actions
            .iter()
            .filter(|a| {
                matches!(&a.details, Details::DeleteBackup { id, .. } if self.rec.backups.get(id).is_some_and(live_on_demand))
            })
            .count();
        let on_demand = self
            .rec
            .backups
            .values()
            .filter(|b| live_on_demand(b))
            .count();
        let Some(what) = mass_removal(forgets, instances, deletes, on_demand) else {
            return;
        };
        if opts.allow_mass_removal {
            self.notes.push(mass_removal_allowed(&what));
            return;
        }
        self.refuse(
            "mass-removal",
            "plan".into(),
            self.file.clone(),
            format!("{what}; that looks like a wrong or truncated file rather than an intended change"),
            "check that the right file is deployed; if the removal is intended, run again with --allow-mass-removal".into(),
        );
    }

    /// A retention change applies to new backups only (SPEC section 4): say so when recorded
    /// backups carry another expiry than the current setting would give.
    pub(super) fn retention_notes(&mut self) {
        let mut differing: BTreeMap<&str, usize> = BTreeMap::new();
        let mut undeclared: BTreeMap<&str, usize> = BTreeMap::new();
        for b in self.rec.backups.values() {
            retention_count(self.cfg, b, &mut differing, &mut undeclared);
        }
        let notes = retention_notes(self.cfg, &differing, &undeclared);
        self.notes.extend(notes);
    }
}

/// An on-demand backup that counts for the mass-removal guard.
pub(super) fn live_on_demand(b: &BackupRecord) -> bool {
    b.kind == BackupKind::OnDemand
        && !matches!(
            b.status,
            BackupStatus::Expired | BackupStatus::Deleting | BackupStatus::Deleted
        )
}

/// What the mass-removal guard objects to, if anything.
pub(super) fn mass_removal(
    forgets: usize,
    instances: usize,
    deletes: usize,
    on_demand: usize,
) -> Option<String> {
    let mass_forget = forgets * 2 > instances && forgets > 0;
    let mass_delete = deletes * 2 > on_demand && deletes > 2;
    Some(match (mass_forget, mass_delete) {
        (true, true) => format!(
            "{forgets} of {instances} instances and {deletes} of {on_demand} on-demand backups would be removed"
        ),
        (true, false) => format!("{forgets} of {instances} instances would be forgotten"),
        (false, true) => format!("{deletes} of {on_demand} on-demand backups would be deleted"),
        (false, false) => return None,
    })
}

pub(super) fn mass_removal_allowed(what: &str) -> String {
    format!("{what}; allowed by --allow-mass-removal")
}

/// Counts `b` for [`retention_notes`]: its expiry differs from what its storage's retention
/// gives now, or its storage is not declared any more.
pub(super) fn retention_count<'r>(
    cfg: &Config,
    b: &'r BackupRecord,
    differing: &mut BTreeMap<&'r str, usize>,
    undeclared: &mut BTreeMap<&'r str, usize>,
) {
    if matches!(
        b.status,
        BackupStatus::Expired | BackupStatus::Skipped | BackupStatus::Deleted
    ) {
        return;
    }
    match cfg.storages.get(&b.storage) {
        None => *undeclared.entry(b.storage.as_str()).or_default() += 1,
        Some(s) => {
            if b.expires_at != expiry(s.retention, b.created_at) {
                *differing.entry(b.storage.as_str()).or_default() += 1;
            }
        }
    }
}

pub(super) fn retention_notes(
    cfg: &Config,
    differing: &BTreeMap<&str, usize>,
    undeclared: &BTreeMap<&str, usize>,
) -> Vec<String> {
    let mut notes = Vec::new();
    for (storage, n) in differing {
        let r = cfg.storages[*storage].retention;
        notes.push(format!(
            "storage `{storage}`: retention is now {r}; it applies to new backups only, {n} existing backup(s) keep the expiry fixed when they were taken"
        ));
    }
    for (storage, n) in undeclared {
        notes.push(format!(
            "{n} backup(s) are in storage `{storage}`, which the file no longer declares; they cannot be restored, deleted or expired until it is declared again"
        ));
    }
    notes
}
