//! The cache's schema as an ordered list of migrations, tracked with `PRAGMA user_version`.
//!
//! Migration `k` (1-based) upgrades a cache at version `k - 1` to version `k`; a fresh file runs
//! all of them. Each step runs in its own transaction together with the `user_version` bump, so
//! a crash mid-upgrade leaves the cache at the old version or the new one, never in between.
//! Earlier versions are never edited once released: a change is always a new step, and the
//! tests build every earlier version by applying only the first `k` steps and upgrade a
//! populated cache from each of them.
//!
//! This module deliberately holds no queries: reading and writing live beside their types.

use anyhow::{Context, Result, bail};
use rusqlite::Connection;

/// The schema steps, oldest first. Never edit a released step; append a new one.
pub const MIGRATIONS: &[&str] = &[
    // v1: the fleet (devices, their components and tags, depots), settings, the hash-chained
    // audit log, and the outbox of commands to devices.
    r"
    CREATE TABLE depots (
        id                 TEXT PRIMARY KEY NOT NULL,
        name               TEXT NOT NULL,
        region             TEXT NOT NULL,
        lat                REAL NOT NULL,
        lon                REAL NOT NULL,
        utc_offset_minutes INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- `dev` is a compact integer key for child tables; `id` is the device's own name.
    -- Tags are a JSON object in one column rather than a table: they are free-form, never
    -- joined on by Convoy (filters run on the loaded fleet), and one column per device keeps
    -- the cold load at one row per device and the file smaller. SQLite's json_extract still
    -- reaches them for ad-hoc queries.
    CREATE TABLE devices (
        dev                    INTEGER PRIMARY KEY,
        id                     TEXT NOT NULL UNIQUE,
        model                  TEXT NOT NULL,
        hw_rev                 TEXT NOT NULL,
        active_slot            TEXT NOT NULL,
        region                 TEXT NOT NULL,
        depot                  TEXT NOT NULL,
        lat                    REAL NOT NULL,
        lon                    REAL NOT NULL,
        connectivity           TEXT NOT NULL,
        metered                INTEGER NOT NULL,
        battery_pct            INTEGER,
        power                  TEXT NOT NULL,
        free_storage_bytes     INTEGER NOT NULL,
        customer_tier          TEXT NOT NULL,
        device_class           TEXT NOT NULL,
        redundancy             TEXT NOT NULL,
        last_seen              INTEGER NOT NULL,
        failed_update_attempts INTEGER NOT NULL,
        tags                   TEXT NOT NULL DEFAULT '{}'
    );

    -- One row per installed component: releases name components, and eligibility queries
    -- (`bootloader < 2.0`) are per component.
    CREATE TABLE components (
        dev     INTEGER NOT NULL REFERENCES devices(dev) ON DELETE CASCADE,
        name    TEXT NOT NULL,
        version TEXT NOT NULL,
        PRIMARY KEY (dev, name)
    ) WITHOUT ROWID;

    CREATE TABLE settings (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE audit (
        seq       INTEGER PRIMARY KEY,
        time      INTEGER NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        payload   TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
    );

    -- The last entry's seq and hash, written in the same transaction as every append, so that
    -- deleting entries at the end of the chain is detected too.
    CREATE TABLE audit_head (
        one  INTEGER PRIMARY KEY CHECK (one = 1),
        seq  INTEGER NOT NULL,
        hash TEXT NOT NULL
    );

    CREATE TABLE outbox (
        seq         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        audit_seq   INTEGER NOT NULL REFERENCES audit(seq),
        device_id   TEXT NOT NULL,
        kind        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'acked')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        created     INTEGER NOT NULL,
        last_sent   INTEGER,
        acked       INTEGER
    );
    CREATE INDEX outbox_unacked ON outbox(seq) WHERE state != 'acked';
    ",
    // v2: telemetry. Raw recent samples (pruned by age), hourly rollups per device and
    // per-minute rollups per cohort (model and firmware), which plots and health gates read.
    r"
    CREATE TABLE metrics (
        metric INTEGER PRIMARY KEY,
        name   TEXT NOT NULL UNIQUE
    );

    -- The key makes ingest idempotent: the same sample ingested twice (a retry after a crash)
    -- is stored once and counted once in the rollups.
    -- Samples and rollups carry no foreign keys on purpose: ingest maps every device id to
    -- `dev` (and so checks it) anyway, and four parent lookups per sample would halve ingest
    -- speed. Removing devices deletes their telemetry explicitly (`replace_fleet`).
    CREATE TABLE samples (
        dev    INTEGER NOT NULL,
        metric INTEGER NOT NULL,
        time   INTEGER NOT NULL,
        value  REAL NOT NULL,
        PRIMARY KEY (dev, metric, time)
    ) WITHOUT ROWID;

    CREATE TABLE rollup_device (
        dev          INTEGER NOT NULL,
        metric       INTEGER NOT NULL,
        bucket       INTEGER NOT NULL,
        count        INTEGER NOT NULL,
        sum          REAL NOT NULL,
        min          REAL NOT NULL,
        max          REAL NOT NULL,
        PRIMARY KEY (dev, metric, bucket)
    ) WITHOUT ROWID;

    CREATE TABLE rollup_cohort (
        cohort       TEXT NOT NULL,
        metric       INTEGER NOT NULL,
        bucket       INTEGER NOT NULL,
        count        INTEGER NOT NULL,
        sum          REAL NOT NULL,
        min          REAL NOT NULL,
        max          REAL NOT NULL,
        PRIMARY KEY (cohort, metric, bucket)
    ) WITHOUT ROWID;
    ",
    // v3: rollouts and their timelines, device events, and the records the engine keeps
    // (findings and scores, releases and manifests, rollout plans, operators and approvals).
    r"
    CREATE TABLE rollout_events (
        rollout_id TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        time       INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        cause      TEXT NOT NULL,
        payload    TEXT NOT NULL,
        PRIMARY KEY (rollout_id, seq)
    ) WITHOUT ROWID;

    CREATE TABLE device_events (
        seq        INTEGER PRIMARY KEY,
        device_id  TEXT NOT NULL,
        rollout_id TEXT,
        time       INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        payload    TEXT NOT NULL
    );
    CREATE INDEX device_events_by_device ON device_events(device_id, seq);

    CREATE TABLE findings (
        id      TEXT PRIMARY KEY NOT NULL,
        created INTEGER NOT NULL,
        body    TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE scores (
        finding_id TEXT NOT NULL REFERENCES findings(id) ON DELETE CASCADE,
        scored_at  INTEGER NOT NULL,
        body       TEXT NOT NULL,
        PRIMARY KEY (finding_id, scored_at)
    ) WITHOUT ROWID;

    CREATE TABLE releases (
        id      TEXT PRIMARY KEY NOT NULL,
        created INTEGER NOT NULL,
        body    TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE manifests (
        release_id TEXT PRIMARY KEY NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
        body       TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE rollout_plans (
        rollout_id TEXT PRIMARY KEY NOT NULL,
        release_id TEXT,
        created    INTEGER NOT NULL,
        body       TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE operators (
        name    TEXT PRIMARY KEY NOT NULL,
        role    TEXT NOT NULL,
        created INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE approvals (
        rollout_id TEXT NOT NULL,
        operator   TEXT NOT NULL REFERENCES operators(name),
        time       INTEGER NOT NULL,
        decision   TEXT NOT NULL,
        body       TEXT NOT NULL,
        PRIMARY KEY (rollout_id, operator, time)
    ) WITHOUT ROWID;
    ",
    // v4: the fleet snapshot, and raw samples keyed time first (below). The snapshot is a
    // compact copy of every device that the cold load reads in one query (`snapshot.rs`); the
    // rows stay the truth. `fleet_state` says whether the snapshot
    // is current: the row load arms it at a new generation, and the first write to devices or
    // components after that bumps the generation and disarms it. The `WHEN` test keeps the
    // rest of a bulk write at one read of a one-row table per row.
    r"
    CREATE TABLE fleet_state (
        one        INTEGER PRIMARY KEY CHECK (one = 1),
        generation INTEGER NOT NULL,
        armed      INTEGER NOT NULL CHECK (armed IN (0, 1))
    );
    INSERT INTO fleet_state(one, generation, armed) VALUES (1, 0, 0);

    CREATE TABLE fleet_snapshot (
        part       INTEGER PRIMARY KEY,
        generation INTEGER NOT NULL,
        body       BLOB NOT NULL
    );

    CREATE TRIGGER devices_insert_stales_snapshot AFTER INSERT ON devices
        WHEN (SELECT armed FROM fleet_state)
        BEGIN UPDATE fleet_state SET generation = generation + 1, armed = 0; END;
    CREATE TRIGGER devices_update_stales_snapshot AFTER UPDATE ON devices
        WHEN (SELECT armed FROM fleet_state)
        BEGIN UPDATE fleet_state SET generation = generation + 1, armed = 0; END;
    CREATE TRIGGER devices_delete_stales_snapshot AFTER DELETE ON devices
        WHEN (SELECT armed FROM fleet_state)
        BEGIN UPDATE fleet_state SET generation = generation + 1, armed = 0; END;
    CREATE TRIGGER components_insert_stales_snapshot AFTER INSERT ON components
        WHEN (SELECT armed FROM fleet_state)
        BEGIN UPDATE fleet_state SET generation = generation + 1, armed = 0; END;
    CREATE TRIGGER components_update_stales_snapshot AFTER UPDATE ON components
        WHEN (SELECT armed FROM fleet_state)
        BEGIN UPDATE fleet_state SET generation = generation + 1, armed = 0; END;
    CREATE TRIGGER components_delete_stales_snapshot AFTER DELETE ON components
        WHEN (SELECT armed FROM fleet_state)
        BEGIN UPDATE fleet_state SET generation = generation + 1, armed = 0; END;

    -- Raw samples keyed time first: telemetry arrives roughly in time order, so each batch
    -- appends at the end of the tree instead of splitting pages all over it (fewer pages
    -- written per batch, and pruning by age is a range delete). The key is the same three
    -- columns, so ingest stays idempotent.
    CREATE TABLE samples_by_time (
        time   INTEGER NOT NULL,
        dev    INTEGER NOT NULL,
        metric INTEGER NOT NULL,
        value  REAL NOT NULL,
        PRIMARY KEY (time, dev, metric)
    ) WITHOUT ROWID;
    INSERT INTO samples_by_time(time, dev, metric, value)
        SELECT time, dev, metric, value FROM samples ORDER BY time, dev, metric;
    DROP TABLE samples;
    ALTER TABLE samples_by_time RENAME TO samples;
    ",
    // v5: API tokens of `convoy serve` (issue 9). Only the SHA-256 of a token is kept; the
    // token itself is printed once when it is made. A revoked token keeps its row (with the
    // time) so the audit trail's references to it still resolve.
    r"
    CREATE TABLE api_tokens (
        id       TEXT PRIMARY KEY NOT NULL,
        operator TEXT NOT NULL REFERENCES operators(name),
        sha256   TEXT NOT NULL UNIQUE,
        created  INTEGER NOT NULL,
        revoked  INTEGER
    ) WITHOUT ROWID;

    -- One global sequence over rollout events (their own key is per rollout), filled by a
    -- trigger, so that the server's live stream finds new events with one indexed range read.
    CREATE TABLE rollout_event_log (
        seq        INTEGER PRIMARY KEY,
        rollout_id TEXT NOT NULL,
        event_seq  INTEGER NOT NULL
    );
    CREATE TRIGGER rollout_events_logged AFTER INSERT ON rollout_events BEGIN
        INSERT INTO rollout_event_log(rollout_id, event_seq) VALUES (new.rollout_id, new.seq);
    END;
    ",
    // v6: what the engine needs to resume a rollout after it stopped (issue 9): the rollout's
    // whole core event log (the timeline in rollout_events keeps only the story, without
    // telemetry, so it cannot be replayed), and the clock of the first run, so a resumed run
    // continues the same simulated time.
    r"
    CREATE TABLE rollout_log (
        rollout_id TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        event      TEXT NOT NULL,
        PRIMARY KEY (rollout_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE rollout_runs (
        rollout_id      TEXT PRIMARY KEY NOT NULL,
        release_id      TEXT NOT NULL,
        clock_start     INTEGER NOT NULL,
        wall_began_ms   INTEGER NOT NULL,
        time_scale      REAL NOT NULL
    ) WITHOUT ROWID;
    ",
    // v7 (issue 16): who made each API token, for the two-person rule, and the lease that
    // keeps a rollout to one engine. `created_by` is the operator whose admin token made it
    // over the API (`created_by_token` is that token's id) or `cli` for `convoy serve token
    // add` on the host (`created_by_token` NULL); both NULL on tokens made before v7.
    // `created_seq` is the audit sequence number of the token's `serve.token.add` entry: the
    // order of tokens and requests, finer than a second (NULL before v7).
    r"
    ALTER TABLE api_tokens ADD COLUMN created_by TEXT;
    ALTER TABLE api_tokens ADD COLUMN created_by_token TEXT;
    ALTER TABLE api_tokens ADD COLUMN created_seq INTEGER;

    -- One row per rollout that an engine runs now: who holds it (host, process, run) and until
    -- when (wall clock, Unix milliseconds). Renewed while the engine runs, deleted when it ends;
    -- another engine takes it over only once it has expired.
    CREATE TABLE engine_leases (
        rollout_id    TEXT PRIMARY KEY NOT NULL,
        host          TEXT NOT NULL,
        pid           INTEGER NOT NULL,
        run_id        TEXT NOT NULL,
        since_ms      INTEGER NOT NULL,
        expires_ms    INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // v8 (issue 23): alerts. How far the alert feed has read each rollout's timeline (and the
    // requests), and one row per alert per channel, waiting for delivery or delivered. Times
    // are the wall clock in Unix milliseconds. `source` names what raised the row (a timeline
    // entry `ROLLOUT#SEQ`, a request `ROLLOUT#request`), so reading a source twice after a
    // crash enqueues nothing twice. `thread` groups a channel's alerts of one incident:
    // `update_no` 0 opened it, later ones are updates threaded to it.
    r"
    CREATE TABLE alert_cursors (
        source    TEXT PRIMARY KEY NOT NULL,
        position  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE alert_outbox (
        id          INTEGER PRIMARY KEY,
        channel     TEXT NOT NULL,
        incident    TEXT NOT NULL,
        thread      TEXT NOT NULL,
        update_no   INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        resolves    INTEGER NOT NULL,
        source      TEXT NOT NULL,
        alert       TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('pending', 'sent')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_ms     INTEGER NOT NULL,
        last_error  TEXT,
        sent_ms     INTEGER,
        UNIQUE (channel, source)
    );
    CREATE INDEX alert_outbox_due ON alert_outbox(state, next_ms);
    CREATE INDEX alert_outbox_thread ON alert_outbox(channel, incident, id);
    ",
    // A depot's tz database zone (issue 20): NULL keeps its fixed utc_offset_minutes.
    "
    ALTER TABLE depots ADD COLUMN time_zone TEXT;
    ",
    // v10 (issue 19): saved cohorts, named fleet searches (`convoy_core::search`) read again at
    // every use, so they pick up devices that match later (dynamic groups).
    r"
    CREATE TABLE cohorts (
        name        TEXT PRIMARY KEY NOT NULL,
        query       TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        created     INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // v11 (issue 20): signals the gates count besides telemetry: support tickets and customer
    // reports per device, from a support system over the API or imported from a file. `source`
    // and `reference` (the ticket's own id) make an import idempotent.
    r"
    CREATE TABLE signals (
        id          INTEGER PRIMARY KEY,
        device_id   TEXT NOT NULL,
        time        INTEGER NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('support_ticket', 'customer_report')),
        source      TEXT NOT NULL,
        reference   TEXT NOT NULL,
        note        TEXT NOT NULL DEFAULT '',
        UNIQUE (source, reference)
    );
    ",
    // v12 (issue 20): the finding a rollout request remediates (its body holds the rest: the
    // tier's proposed shape, the chosen one and the checklist), for the remediation metrics'
    // join from a rollout to its finding.
    r"
    ALTER TABLE rollout_plans ADD COLUMN finding_id TEXT;
    CREATE INDEX rollout_plans_finding ON rollout_plans(finding_id) WHERE finding_id IS NOT NULL;
    ",
    // v13 (issue 22):
    // the fleet summary of `GET /fleet` kept as devices change instead of counted by full
    // scans (`summary.rs`). `device_facets` holds each device's model, region, firmware and
    // state (the newest of `query::DEVICE_STATES` in its history, else `idle`), kept by
    // triggers on devices, components and device events; `fleet_counts` holds the number of
    // devices per value, kept by triggers on `device_facets`. While `fleet_counts_state.valid`
    // is 0 (a fresh cache, an upgraded one, or after a bulk write that suspended the
    // `_keeps_counts` triggers with the snapshot's) the next summary rebuilds both in one pass.
    r"
    CREATE TABLE device_facets (
        dev      INTEGER PRIMARY KEY,
        model    TEXT NOT NULL,
        region   TEXT NOT NULL,
        firmware TEXT NOT NULL,
        state    TEXT NOT NULL
    );
    CREATE TABLE fleet_counts (
        dim  TEXT NOT NULL,
        key  TEXT NOT NULL,
        n    INTEGER NOT NULL,
        PRIMARY KEY (dim, key)
    ) WITHOUT ROWID;
    CREATE TABLE fleet_counts_state (
        one   INTEGER PRIMARY KEY CHECK (one = 1),
        valid INTEGER NOT NULL CHECK (valid IN (0, 1))
    );
    INSERT INTO fleet_counts_state(one, valid) VALUES (1, 0);

    CREATE TRIGGER device_facets_insert_counts AFTER INSERT ON device_facets BEGIN
        INSERT INTO fleet_counts(dim, key, n)
            VALUES ('model', new.model, 1), ('region', new.region, 1),
                   ('firmware', new.firmware, 1), ('state', new.state, 1)
            ON CONFLICT (dim, key) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER device_facets_delete_counts AFTER DELETE ON device_facets BEGIN
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'model' AND key = old.model;
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'region' AND key = old.region;
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'firmware' AND key = old.firmware;
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'state' AND key = old.state;
        DELETE FROM fleet_counts WHERE n <= 0;
    END;
    CREATE TRIGGER device_facets_update_counts AFTER UPDATE ON device_facets
        WHEN old.model IS NOT new.model OR old.region IS NOT new.region
          OR old.firmware IS NOT new.firmware OR old.state IS NOT new.state
    BEGIN
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'model' AND key = old.model;
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'region' AND key = old.region;
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'firmware' AND key = old.firmware;
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'state' AND key = old.state;
        INSERT INTO fleet_counts(dim, key, n)
            VALUES ('model', new.model, 1), ('region', new.region, 1),
                   ('firmware', new.firmware, 1), ('state', new.state, 1)
            ON CONFLICT (dim, key) DO UPDATE SET n = n + 1;
        DELETE FROM fleet_counts WHERE n <= 0;
    END;

    CREATE TRIGGER devices_insert_keeps_counts AFTER INSERT ON devices
        WHEN (SELECT valid FROM fleet_counts_state)
    BEGIN
        INSERT INTO device_facets(dev, model, region, firmware, state) VALUES (
            new.dev, new.model, new.region,
            coalesce((SELECT c.version FROM components c
                      WHERE c.dev = new.dev AND c.name = 'firmware'), 'none'),
            coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = new.id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle'));
    END;
    CREATE TRIGGER devices_update_keeps_counts AFTER UPDATE ON devices
        WHEN (SELECT valid FROM fleet_counts_state)
          AND (old.id IS NOT new.id OR old.model IS NOT new.model
               OR old.region IS NOT new.region)
    BEGIN
        UPDATE device_facets SET model = new.model, region = new.region,
            state = coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = new.id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle')
            WHERE dev = new.dev;
    END;
    CREATE TRIGGER devices_delete_keeps_counts AFTER DELETE ON devices
        WHEN (SELECT valid FROM fleet_counts_state)
    BEGIN
        DELETE FROM device_facets WHERE dev = old.dev;
    END;
    CREATE TRIGGER components_insert_keeps_counts AFTER INSERT ON components
        WHEN new.name = 'firmware' AND (SELECT valid FROM fleet_counts_state)
    BEGIN
        UPDATE device_facets SET firmware = new.version WHERE dev = new.dev;
    END;
    CREATE TRIGGER components_update_keeps_counts AFTER UPDATE ON components
        WHEN (old.name = 'firmware' OR new.name = 'firmware')
          AND (SELECT valid FROM fleet_counts_state)
    BEGIN
        UPDATE device_facets SET firmware = coalesce((SELECT c.version FROM components c
                WHERE c.dev = device_facets.dev AND c.name = 'firmware'), 'none')
            WHERE dev IN (old.dev, new.dev);
    END;
    CREATE TRIGGER components_delete_keeps_counts AFTER DELETE ON components
        WHEN old.name = 'firmware' AND (SELECT valid FROM fleet_counts_state)
    BEGIN
        UPDATE device_facets SET firmware = coalesce((SELECT c.version FROM components c
                WHERE c.dev = old.dev AND c.name = 'firmware'), 'none')
            WHERE dev = old.dev;
    END;
    CREATE TRIGGER device_events_insert_keeps_counts AFTER INSERT ON device_events
        WHEN new.kind IN ('pending', 'offered', 'downloading', 'verified', 'installing',
                          'rebooting', 'confirmed', 'failed', 'reverted', 'cancelled')
          AND (SELECT valid FROM fleet_counts_state)
    BEGIN
        UPDATE device_facets SET state = coalesce((SELECT e.kind FROM device_events e
                WHERE e.device_id = new.device_id AND e.kind IN ('pending', 'offered',
                  'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                  'failed', 'reverted', 'cancelled')
                ORDER BY e.seq DESC LIMIT 1), 'idle')
            WHERE dev = (SELECT d.dev FROM devices d WHERE d.id = new.device_id);
    END;
    CREATE TRIGGER device_events_delete_keeps_counts AFTER DELETE ON device_events
        WHEN (SELECT valid FROM fleet_counts_state)
    BEGIN
        UPDATE device_facets SET state = coalesce((SELECT e.kind FROM device_events e
                WHERE e.device_id = old.device_id AND e.kind IN ('pending', 'offered',
                  'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                  'failed', 'reverted', 'cancelled')
                ORDER BY e.seq DESC LIMIT 1), 'idle')
            WHERE dev = (SELECT d.dev FROM devices d WHERE d.id = old.device_id);
    END;
    ",
    // v14 (issue 22): a device's components as a JSON object in one column of its row, like
    // its tags, instead of one row each in `components` (three of the four million rows a
    // million-device import wrote). Nothing joins on a component but the firmware facet and
    // a few firmware lookups, which `json_extract(components, '$.firmware')` reaches. The
    // rows are folded into the column, then the table goes, with its triggers. The fold does
    // not change the fleet, so the snapshot's staleness trigger is lifted for it (a current
    // snapshot stays current). The facets' firmware now follows the column.
    r"
    DROP TRIGGER devices_update_stales_snapshot;
    DROP TRIGGER devices_insert_keeps_counts;
    DROP TRIGGER devices_update_keeps_counts;
    ALTER TABLE devices ADD COLUMN components TEXT NOT NULL DEFAULT '{}';
    UPDATE devices SET components = (
        SELECT json_group_object(name, version)
        FROM (SELECT c.name, c.version FROM components c WHERE c.dev = devices.dev
              ORDER BY c.name))
    WHERE dev IN (SELECT dev FROM components);
    DROP TABLE components;
    CREATE TRIGGER devices_update_stales_snapshot AFTER UPDATE ON devices
        WHEN (SELECT armed FROM fleet_state)
        BEGIN UPDATE fleet_state SET generation = generation + 1, armed = 0; END;
    CREATE TRIGGER devices_insert_keeps_counts AFTER INSERT ON devices
        WHEN (SELECT valid FROM fleet_counts_state)
    BEGIN
        INSERT INTO device_facets(dev, model, region, firmware, state) VALUES (
            new.dev, new.model, new.region,
            coalesce(json_extract(new.components, '$.firmware'), 'none'),
            coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = new.id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle'));
    END;
    CREATE TRIGGER devices_update_keeps_counts AFTER UPDATE ON devices
        WHEN (SELECT valid FROM fleet_counts_state)
          AND (old.id IS NOT new.id OR old.model IS NOT new.model
               OR old.region IS NOT new.region OR old.components IS NOT new.components)
    BEGIN
        UPDATE device_facets SET model = new.model, region = new.region,
            firmware = coalesce(json_extract(new.components, '$.firmware'), 'none'),
            state = coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = new.id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle')
            WHERE dev = new.dev;
    END;
    ",
    // v15 (issue 22): the fleet summary's counts kept by the triggers on devices and device
    // events themselves, without the `device_facets` copy of every device (a million rows an
    // import wrote for nothing else). A device's old values are in `old` (its firmware in
    // `old.components`), and its state before an event is the newest update state before
    // that event. The counts stay as they are: they are the same numbers.
    r"
    DROP TRIGGER devices_insert_keeps_counts;
    DROP TRIGGER devices_update_keeps_counts;
    DROP TRIGGER devices_delete_keeps_counts;
    DROP TRIGGER device_events_insert_keeps_counts;
    DROP TRIGGER device_events_delete_keeps_counts;
    DROP TABLE device_facets;
    CREATE TRIGGER devices_insert_keeps_counts AFTER INSERT ON devices
        WHEN (SELECT valid FROM fleet_counts_state)
    BEGIN
        INSERT INTO fleet_counts(dim, key, n)
            VALUES ('model', new.model, 1), ('region', new.region, 1),
                   ('firmware', coalesce(json_extract(new.components, '$.firmware'), 'none'), 1),
                   ('state', coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = new.id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle'), 1)
            ON CONFLICT (dim, key) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER devices_delete_keeps_counts AFTER DELETE ON devices
        WHEN (SELECT valid FROM fleet_counts_state)
    BEGIN
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'model' AND key = old.model;
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'region' AND key = old.region;
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'firmware'
            AND key = coalesce(json_extract(old.components, '$.firmware'), 'none');
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'state' AND key = coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = old.id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle');
        DELETE FROM fleet_counts WHERE n <= 0;
    END;
    CREATE TRIGGER devices_update_keeps_counts AFTER UPDATE ON devices
        WHEN (SELECT valid FROM fleet_counts_state)
          AND (old.id IS NOT new.id OR old.model IS NOT new.model
               OR old.region IS NOT new.region OR old.components IS NOT new.components)
    BEGIN
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'model' AND key = old.model;
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'region' AND key = old.region;
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'firmware'
            AND key = coalesce(json_extract(old.components, '$.firmware'), 'none');
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'state' AND key = coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = old.id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle');
        INSERT INTO fleet_counts(dim, key, n)
            VALUES ('model', new.model, 1), ('region', new.region, 1),
                   ('firmware', coalesce(json_extract(new.components, '$.firmware'), 'none'), 1),
                   ('state', coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = new.id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle'), 1)
            ON CONFLICT (dim, key) DO UPDATE SET n = n + 1;
        DELETE FROM fleet_counts WHERE n <= 0;
    END;
    CREATE TRIGGER device_events_insert_keeps_counts AFTER INSERT ON device_events
        WHEN new.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
          AND (SELECT valid FROM fleet_counts_state)
          AND EXISTS (SELECT 1 FROM devices d WHERE d.id = new.device_id)
    BEGIN
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'state'
            AND key = coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = new.device_id AND e.seq <> new.seq AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle');
        INSERT INTO fleet_counts(dim, key, n)
            VALUES ('state', coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = new.device_id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle'), 1)
            ON CONFLICT (dim, key) DO UPDATE SET n = n + 1;
        DELETE FROM fleet_counts WHERE n <= 0;
    END;
    CREATE TRIGGER device_events_delete_keeps_counts AFTER DELETE ON device_events
        WHEN old.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
          AND (SELECT valid FROM fleet_counts_state)
          AND EXISTS (SELECT 1 FROM devices d WHERE d.id = old.device_id)
    BEGIN
        UPDATE fleet_counts SET n = n - 1 WHERE dim = 'state' AND key = CASE
            WHEN old.seq > coalesce((SELECT max(e.seq) FROM device_events e
                                     WHERE e.device_id = old.device_id
                                       AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')), -1)
            THEN old.kind
            ELSE coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = old.device_id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle') END;
        INSERT INTO fleet_counts(dim, key, n)
            VALUES ('state', coalesce((SELECT e.kind FROM device_events e
                      WHERE e.device_id = old.device_id AND e.kind IN ('pending', 'offered',
                        'downloading', 'verified', 'installing', 'rebooting', 'confirmed',
                        'failed', 'reverted', 'cancelled')
                      ORDER BY e.seq DESC LIMIT 1), 'idle'), 1)
            ON CONFLICT (dim, key) DO UPDATE SET n = n + 1;
        DELETE FROM fleet_counts WHERE n <= 0;
    END;
    ",
];

/// The version that folded the `components` table into the devices' `components` column.
pub const COMPONENTS_COLUMN_VERSION: u32 = 14;

/// The version that gave depots their `time_zone` column.
pub const DEPOT_ZONES_VERSION: u32 = 9;

/// The schema version a fresh or upgraded cache has.
pub const LATEST_VERSION: u32 = MIGRATIONS.len() as u32;

/// The cache's schema version (`PRAGMA user_version`).
pub fn version(conn: &Connection) -> Result<u32> {
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .context("reading the cache's schema version")?;
    u32::try_from(v).with_context(|| format!("invalid schema version {v} in the cache"))
}

/// Upgrades the cache to `target` (at most [`LATEST_VERSION`]), one transaction per step.
/// Returns the version the cache had before.
pub fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32> {
    let before = version(conn)?;
    if before > LATEST_VERSION {
        bail!(
            "the cache has schema version {before}, newer than this Convoy knows \
             ({LATEST_VERSION}): upgrade Convoy to open it"
        );
    }
    for step in before..target.min(LATEST_VERSION) {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[step as usize])
            .with_context(|| format!("upgrading the cache to schema version {}", step + 1))?;
        tx.pragma_update(None, "user_version", i64::from(step + 1))?;
        tx.commit()
            .with_context(|| format!("committing schema version {}", step + 1))?;
    }
    Ok(before)
}
