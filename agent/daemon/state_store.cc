#include "agent/daemon/state_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/hash.h"
#include "common/json.h"
#include "spec/wire.h"

namespace amlnode::agent {

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS identity (
  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
  node_id TEXT NOT NULL,
  node_token TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  epoch INTEGER NOT NULL,
  experiment_name TEXT NOT NULL,
  job_text TEXT NOT NULL,
  job_file_name TEXT NOT NULL,
  status TEXT NOT NULL,
  shim_pid INTEGER,
  shim_start_time INTEGER,
  launching INTEGER NOT NULL DEFAULT 0,
  share TEXT NOT NULL DEFAULT 'null',
  compute TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS registration (
  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
  registration_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS run_containers (
  run_id TEXT PRIMARY KEY,
  container_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log_cursors (
  run_id TEXT NOT NULL,
  stream TEXT NOT NULL,
  offset INTEGER NOT NULL,
  PRIMARY KEY (run_id, stream)
);
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id TEXT NOT NULL,
  report TEXT NOT NULL
);
)sql";

Error store_error(sqlite3* db, const std::string& what) {
  return Error{"StateStoreError", what + ": " + (db ? sqlite3_errmsg(db) : "out of memory")};
}

// Finalizes a statement when it goes out of scope.
struct Statement {
  sqlite3_stmt* stmt = nullptr;
  ~Statement() { sqlite3_finalize(stmt); }
};

const char* column_text(sqlite3_stmt* stmt, int column) {
  const unsigned char* text = sqlite3_column_text(stmt, column);
  return text ? reinterpret_cast<const char*>(text) : "";
}

nlohmann::json report_json(const StatusReport& report) {
  nlohmann::json out = {{"run_id", report.run_id},
                        {"epoch", report.epoch},
                        {"status", report.status},
                        {"timings", report.timings}};
  if (report.exit_code) out["exit_code"] = *report.exit_code;
  if (report.error)
    out["error"] = {{"code", report.error->code}, {"message", report.error->message}};
  if (!report.dropped_logs.empty()) out["dropped_logs"] = report.dropped_logs;
  return out;
}

StatusReport report_from_json(const nlohmann::json& in) {
  StatusReport report;
  report.run_id = in.value("run_id", "");
  report.epoch = in.value("epoch", std::int64_t{0});
  report.status = in.value("status", "");
  report.timings = in.value("timings", nlohmann::json::object());
  if (in.contains("exit_code")) report.exit_code = in["exit_code"].get<int>();
  if (in.contains("error"))
    report.error = Error{in["error"].value("code", ""), in["error"].value("message", "")};
  if (in.contains("dropped_logs") && in["dropped_logs"].is_object())
    report.dropped_logs = in["dropped_logs"];
  return report;
}

// The database holds the node token, so the file is made owner-only before SQLite opens it.
// SQLite gives its -wal and -shm files the main file's permissions.
Result<void> create_private_file(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return Error{"StateStoreError", "creating " + file.string() + ": " + std::strerror(errno)};
  int changed = ::fchmod(fd, 0600);
  int err = errno;
  ::close(fd);
  if (changed != 0)
    return Error{"StateStoreError", "chmod " + file.string() + ": " + std::strerror(err)};
  return ok();
}

// `bytes` bytes from the kernel's CSPRNG, in hex.
Result<std::string> random_key(std::size_t bytes) {
  std::string key = random_hex(bytes);
  if (key.empty())
    return Error{"StateStoreError", std::string("getrandom: ") + std::strerror(errno)};
  return key;
}

// Columns added after a state dir may have been made: an older agent.db gains them.
// Columns added since the first release, each with the statement that adds it to an older store.
Result<void> add_missing_columns(sqlite3* db, const std::filesystem::path& file) {
  struct Column {
    const char* probe;
    const char* add;
  };
  for (const auto& column :
       {Column{"SELECT launching FROM runs LIMIT 0",
               "ALTER TABLE runs ADD COLUMN launching INTEGER NOT NULL DEFAULT 0"},
        Column{"SELECT state FROM log_cursors LIMIT 0",
               "ALTER TABLE log_cursors ADD COLUMN state TEXT"},
        Column{"SELECT share FROM runs LIMIT 0",
               "ALTER TABLE runs ADD COLUMN share TEXT NOT NULL DEFAULT 'null'"},
        Column{"SELECT compute FROM runs LIMIT 0",
               "ALTER TABLE runs ADD COLUMN compute TEXT NOT NULL DEFAULT '{}'"}}) {
    Statement query;
    if (sqlite3_prepare_v2(db, column.probe, -1, &query.stmt, nullptr) == SQLITE_OK) continue;
    char* message = nullptr;
    if (sqlite3_exec(db, column.add, nullptr, nullptr, &message) != SQLITE_OK) {
      Error error{"StateStoreError", file.string() + ": " + (message ? message : "upgrade failed")};
      sqlite3_free(message);
      return error;
    }
  }
  return ok();
}

// A cursor's fields beyond the control plane's length, as the JSON of its `state` column (null in
// a store written before they existed: the file was read exactly as far as the server has).
std::string cursor_state_json(const LogCursor& cursor) {
  nlohmann::json state = {{"file", cursor.file},
                          {"inode", cursor.inode},
                          {"tail", hex_encode(cursor.tail)},
                          {"dropped", cursor.dropped},
                          {"epoch", cursor.epoch}};
  if (!cursor.set_aside.empty()) state["set_aside"] = cursor.set_aside;
  return state.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

LogCursor cursor_from_row(std::uint64_t server, const char* state_text) {
  LogCursor cursor;
  cursor.server = server;
  cursor.file = server;
  if (!state_text) return cursor;
  auto state = parse_untrusted_json(state_text);
  if (!state.is_object()) return cursor;
  cursor.file = state.value("file", server);
  cursor.inode = state.value("inode", std::uint64_t{0});
  cursor.tail = hex_decode(state.value("tail", ""));
  cursor.dropped = state.value("dropped", std::uint64_t{0});
  cursor.set_aside = state.value("set_aside", "");
  cursor.epoch = state.value("epoch", std::int64_t{0});
  return cursor;
}

// Within its scope, commits do not wait for an fsync of their own (synchronous=NORMAL instead of
// FULL). In WAL mode such a commit survives a crash of this process at once, and reaches the disk
// with the next durable commit or checkpoint; only a power cut before that can take it back. Used
// for the writes that a power cut may undo without harm (docs/agent.md, "Identity and state"):
// log cursors (a cursor behind the control plane resends bytes the server skips), status
// acknowledgements (a status sent again is idempotent), dropping a finished run (the control
// plane tells the node to stop a run it still lists, and the node drops it again), and a run's
// record, which the daemon always follows with a synced outbox write that makes both durable.
class RelaxedSync {
 public:
  explicit RelaxedSync(sqlite3* db) : db_(db) {
    sqlite3_exec(db_, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
  }
  ~RelaxedSync() { sqlite3_exec(db_, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr); }
  RelaxedSync(const RelaxedSync&) = delete;
  RelaxedSync& operator=(const RelaxedSync&) = delete;

 private:
  sqlite3* db_;
};

class SqliteStateStore final : public StateStore {
 public:
  explicit SqliteStateStore(sqlite3* db) : db_(db) {}
  ~SqliteStateStore() override { sqlite3_close_v2(db_); }

  Result<std::optional<NodeIdentity>> load_identity() override {
    std::lock_guard lock(mutex_);
    Statement query;
    if (sqlite3_prepare_v2(db_, "SELECT node_id, node_token FROM identity WHERE singleton = 1", -1,
                           &query.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "reading the node identity");
    }
    int step = sqlite3_step(query.stmt);
    if (step == SQLITE_DONE) return std::optional<NodeIdentity>();
    if (step != SQLITE_ROW) return store_error(db_, "reading the node identity");
    NodeIdentity identity{reinterpret_cast<const char*>(sqlite3_column_text(query.stmt, 0)),
                          reinterpret_cast<const char*>(sqlite3_column_text(query.stmt, 1))};
    return std::optional<NodeIdentity>(std::move(identity));
  }

  Result<void> save_identity(const NodeIdentity& identity) override {
    std::lock_guard lock(mutex_);
    Statement insert;
    if (sqlite3_prepare_v2(
            db_,
            "INSERT OR REPLACE INTO identity (singleton, node_id, node_token) VALUES (1, ?, ?)", -1,
            &insert.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "storing the node identity");
    }
    sqlite3_bind_text(insert.stmt, 1, identity.node_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(insert.stmt, 2, identity.node_token.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(insert.stmt) != SQLITE_DONE)
      return store_error(db_, "storing the node identity");
    return ok();
  }

  Result<std::string> registration_key() override {
    std::lock_guard lock(mutex_);
    Statement query;
    if (sqlite3_prepare_v2(db_, "SELECT registration_key FROM registration WHERE singleton = 1", -1,
                           &query.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "reading the registration key");
    }
    int step = sqlite3_step(query.stmt);
    if (step == SQLITE_ROW) return std::string(column_text(query.stmt, 0));
    if (step != SQLITE_DONE) return store_error(db_, "reading the registration key");
    auto key = random_key(32);
    if (!key.ok()) return key.error();
    Statement insert;
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO registration (singleton, registration_key) VALUES (1, ?)",
                           -1, &insert.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "storing the registration key");
    }
    sqlite3_bind_text(insert.stmt, 1, key->c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(insert.stmt) != SQLITE_DONE)
      return store_error(db_, "storing the registration key");
    return key;
  }

  Result<void> save_run(const HeldRunRecord& run) override {
    return write_run(run, /*synced=*/false,
                     "INSERT INTO runs (run_id, epoch, experiment_name, job_text, job_file_name, "
                     "status, shim_pid, shim_start_time, share, compute) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT(run_id) DO UPDATE SET epoch = ?2, experiment_name = ?3, "
                     "job_text = ?4, job_file_name = ?5, status = ?6, shim_pid = ?7, "
                     "shim_start_time = ?8, share = ?9, compute = ?10");
  }

  Result<void> mark_launching(const HeldRunRecord& run) override {
    return write_run(run, /*synced=*/true,
                     "INSERT INTO runs (run_id, epoch, experiment_name, job_text, job_file_name, "
                     "status, shim_pid, shim_start_time, share, compute, launching) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
                     "ON CONFLICT(run_id) DO UPDATE SET launching = 1");
  }

  Result<void> write_run(const HeldRunRecord& run, bool synced, const char* sql) {
    std::lock_guard lock(mutex_);
    std::optional<RelaxedSync> relaxed;
    if (!synced) relaxed.emplace(db_);
    Statement insert;
    if (sqlite3_prepare_v2(db_, sql, -1, &insert.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "storing run " + run.lease.run_id);
    }
    sqlite3_bind_text(insert.stmt, 1, run.lease.run_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(insert.stmt, 2, run.lease.epoch);
    sqlite3_bind_text(insert.stmt, 3, run.lease.experiment_name.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(insert.stmt, 4, run.lease.job_text.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(insert.stmt, 5, run.lease.job_file_name.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(insert.stmt, 6, run.status.c_str(), -1, SQLITE_TRANSIENT);
    if (run.shim_pid) sqlite3_bind_int64(insert.stmt, 7, *run.shim_pid);
    if (run.shim_start_time)
      sqlite3_bind_int64(insert.stmt, 8, static_cast<sqlite3_int64>(*run.shim_start_time));
    // A run across nodes: its share of the lease (node rank, nodes, master port).
    std::string share = wire::leased_share_json(run.lease).dump();
    sqlite3_bind_text(insert.stmt, 9, share.c_str(), -1, SQLITE_TRANSIENT);
    // The node id and the compute the lease named (a Batch pool's pool and account).
    std::string compute = wire::leased_compute_json(run.lease).dump();
    sqlite3_bind_text(insert.stmt, 10, compute.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(insert.stmt) != SQLITE_DONE)
      return store_error(db_, "storing run " + run.lease.run_id);
    return ok();
  }

  Result<std::vector<HeldRunRecord>> load_runs() override {
    std::lock_guard lock(mutex_);
    Statement query;
    if (sqlite3_prepare_v2(
            db_,
            "SELECT runs.run_id, epoch, experiment_name, job_text, job_file_name, status, "
            "shim_pid, shim_start_time, container_id, launching, share, compute FROM runs "
            "LEFT JOIN "
            "run_containers "
            "ON runs.run_id = run_containers.run_id ORDER BY runs.run_id",
            -1, &query.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "reading the held runs");
    }
    std::vector<HeldRunRecord> runs;
    int step;
    while ((step = sqlite3_step(query.stmt)) == SQLITE_ROW) {
      HeldRunRecord run;
      run.lease = {column_text(query.stmt, 0), sqlite3_column_int64(query.stmt, 1),
                   column_text(query.stmt, 2), column_text(query.stmt, 3),
                   column_text(query.stmt, 4)};
      run.status = column_text(query.stmt, 5);
      if (sqlite3_column_type(query.stmt, 6) != SQLITE_NULL)
        run.shim_pid = sqlite3_column_int(query.stmt, 6);
      if (sqlite3_column_type(query.stmt, 7) != SQLITE_NULL) {
        run.shim_start_time = static_cast<unsigned long long>(sqlite3_column_int64(query.stmt, 7));
      }
      if (sqlite3_column_type(query.stmt, 8) != SQLITE_NULL)
        run.container_id = column_text(query.stmt, 8);
      run.launching = sqlite3_column_int(query.stmt, 9) != 0;
      // Only this agent writes the column: a share that does not read back is dropped, and the
      // run is then refused as a run across nodes without its share.
      LeasedRun shared = run.lease;
      if (wire::read_leased_share(parse_untrusted_json(column_text(query.stmt, 10)), shared).ok())
        run.lease = std::move(shared);
      LeasedRun with_compute = run.lease;
      if (wire::read_leased_compute(parse_untrusted_json(column_text(query.stmt, 11)), with_compute)
              .ok())
        run.lease = std::move(with_compute);
      runs.push_back(std::move(run));
    }
    if (step != SQLITE_DONE) return store_error(db_, "reading the held runs");
    return runs;
  }

  Result<void> save_container_id(const std::string& run_id,
                                 const std::string& container_id) override {
    std::lock_guard lock(mutex_);
    Statement insert;
    if (sqlite3_prepare_v2(db_,
                           "INSERT OR REPLACE INTO run_containers (run_id, container_id) "
                           "VALUES (?, ?)",
                           -1, &insert.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "storing the container of run " + run_id);
    }
    sqlite3_bind_text(insert.stmt, 1, run_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(insert.stmt, 2, container_id.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(insert.stmt) != SQLITE_DONE)
      return store_error(db_, "storing the container of run " + run_id);
    return ok();
  }

  // One transaction for the four tables, so dropping a run costs one commit.
  Result<void> drop_run(const std::string& run_id) override {
    std::lock_guard lock(mutex_);
    RelaxedSync relaxed(db_);
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
      return store_error(db_, "dropping run " + run_id);
    auto dropped = delete_run_rows(run_id);
    const char* end = dropped.ok() ? "COMMIT" : "ROLLBACK";
    if (sqlite3_exec(db_, end, nullptr, nullptr, nullptr) != SQLITE_OK && dropped.ok())
      return store_error(db_, "dropping run " + run_id);
    return dropped;
  }

  Result<void> delete_run_rows(const std::string& run_id) {
    for (const char* sql :
         {"DELETE FROM runs WHERE run_id = ?", "DELETE FROM run_containers WHERE run_id = ?",
          "DELETE FROM outbox WHERE run_id = ?", "DELETE FROM log_cursors WHERE run_id = ?"}) {
      Statement remove;
      if (sqlite3_prepare_v2(db_, sql, -1, &remove.stmt, nullptr) != SQLITE_OK) {
        return store_error(db_, "dropping run " + run_id);
      }
      sqlite3_bind_text(remove.stmt, 1, run_id.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(remove.stmt) != SQLITE_DONE)
        return store_error(db_, "dropping run " + run_id);
    }
    return ok();
  }

  Result<std::map<std::string, LogCursor>> log_cursors(const std::string& run_id) override {
    std::lock_guard lock(mutex_);
    Statement query;
    if (sqlite3_prepare_v2(db_, "SELECT stream, offset, state FROM log_cursors WHERE run_id = ?",
                           -1, &query.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "reading the log cursors of run " + run_id);
    }
    sqlite3_bind_text(query.stmt, 1, run_id.c_str(), -1, SQLITE_TRANSIENT);
    std::map<std::string, LogCursor> cursors;
    int step;
    while ((step = sqlite3_step(query.stmt)) == SQLITE_ROW) {
      cursors[column_text(query.stmt, 0)] =
          cursor_from_row(static_cast<std::uint64_t>(sqlite3_column_int64(query.stmt, 1)),
                          reinterpret_cast<const char*>(sqlite3_column_text(query.stmt, 2)));
    }
    if (step != SQLITE_DONE) return store_error(db_, "reading the log cursors of run " + run_id);
    return cursors;
  }

  Result<void> save_log_cursor(const std::string& run_id, const std::string& stream,
                               const LogCursor& cursor, bool synced) override {
    std::lock_guard lock(mutex_);
    std::optional<RelaxedSync> relaxed;
    if (!synced) relaxed.emplace(db_);
    Statement insert;
    if (sqlite3_prepare_v2(db_,
                           "INSERT OR REPLACE INTO log_cursors (run_id, stream, offset, state) "
                           "VALUES (?, ?, ?, ?)",
                           -1, &insert.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "storing a log cursor of run " + run_id);
    }
    std::string state = cursor_state_json(cursor);
    sqlite3_bind_text(insert.stmt, 1, run_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(insert.stmt, 2, stream.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(insert.stmt, 3, static_cast<sqlite3_int64>(cursor.server));
    sqlite3_bind_text(insert.stmt, 4, state.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(insert.stmt) != SQLITE_DONE)
      return store_error(db_, "storing a log cursor of run " + run_id);
    return ok();
  }

  Result<std::int64_t> enqueue_status(const StatusReport& report) override {
    std::lock_guard lock(mutex_);
    Statement insert;
    if (sqlite3_prepare_v2(db_, "INSERT INTO outbox (run_id, report) VALUES (?, ?)", -1,
                           &insert.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "queueing a status of run " + report.run_id);
    }
    std::string text = report_json(report).dump();
    sqlite3_bind_text(insert.stmt, 1, report.run_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(insert.stmt, 2, text.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(insert.stmt) != SQLITE_DONE)
      return store_error(db_, "queueing a status of run " + report.run_id);
    return static_cast<std::int64_t>(sqlite3_last_insert_rowid(db_));
  }

  Result<std::vector<OutboxEntry>> pending_statuses() override {
    std::lock_guard lock(mutex_);
    Statement query;
    if (sqlite3_prepare_v2(db_, "SELECT seq, report FROM outbox ORDER BY seq", -1, &query.stmt,
                           nullptr) != SQLITE_OK) {
      return store_error(db_, "reading the status outbox");
    }
    std::vector<OutboxEntry> entries;
    int step;
    while ((step = sqlite3_step(query.stmt)) == SQLITE_ROW) {
      auto parsed = nlohmann::json::parse(column_text(query.stmt, 1), nullptr, false);
      if (!parsed.is_object())
        continue;  // never written by us; skipping it beats wedging the outbox
      entries.push_back({sqlite3_column_int64(query.stmt, 0), report_from_json(parsed)});
    }
    if (step != SQLITE_DONE) return store_error(db_, "reading the status outbox");
    return entries;
  }

  Result<void> acknowledge_status(std::int64_t seq) override {
    std::lock_guard lock(mutex_);
    RelaxedSync relaxed(db_);
    Statement remove;
    if (sqlite3_prepare_v2(db_, "DELETE FROM outbox WHERE seq = ?", -1, &remove.stmt, nullptr) !=
        SQLITE_OK) {
      return store_error(db_, "acknowledging a status");
    }
    sqlite3_bind_int64(remove.stmt, 1, seq);
    if (sqlite3_step(remove.stmt) != SQLITE_DONE) return store_error(db_, "acknowledging a status");
    return ok();
  }

 private:
  sqlite3* db_;
  // The store is used from the worker pool; SQLite's own serialisation would do, but one writer at
  // a time keeps statements simple.
  std::mutex mutex_;
};

}  // namespace

Result<std::unique_ptr<StateStore>> open_sqlite_state_store(
    const std::filesystem::path& state_dir) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) return Error{"StateStoreError", "creating " + state_dir.string() + ": " + ec.message()};
  auto file = state_dir / "agent.db";
  if (auto created = create_private_file(file); !created) return created.error();
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
      SQLITE_OK) {
    Error error = store_error(db, "opening " + file.string());
    sqlite3_close_v2(db);
    return error;
  }
  sqlite3_busy_timeout(db, 5000);
  char* message = nullptr;
  std::string setup = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") + kSchema;
  if (sqlite3_exec(db, setup.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    Error error{"StateStoreError", file.string() + ": " + (message ? message : "setup failed")};
    sqlite3_free(message);
    sqlite3_close_v2(db);
    return error;
  }
  if (auto upgraded = add_missing_columns(db, file); !upgraded) {
    sqlite3_close_v2(db);
    return upgraded.error();
  }
  return std::unique_ptr<StateStore>(std::make_unique<SqliteStateStore>(db));
}

}  // namespace amlnode::agent
