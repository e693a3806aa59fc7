// The SQLite Store. One connection, used by one thread at a time: the server's start-up reads
// everything once, and afterwards only the StoreWriter thread writes.

#include <sqlite3.h>

#include <algorithm>
#include <map>
#include <string>

#include "common/error_codes.h"
#include "common/json.h"
#include "controlplane/json_fields.h"
#include "controlplane/store.h"
#include "spec/wire.h"

namespace amlnode::controlplane {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS nodes (
  node_id TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL UNIQUE,
  compute_name TEXT NOT NULL,
  hostname TEXT NOT NULL,
  ips TEXT NOT NULL,
  ssh_port INTEGER NOT NULL,
  cpus INTEGER NOT NULL,
  memory_bytes INTEGER NOT NULL,
  gpus INTEGER NOT NULL,
  labels TEXT NOT NULL,
  agent_version TEXT NOT NULL,
  state TEXT NOT NULL,
  reason TEXT NOT NULL,
  lost INTEGER NOT NULL,
  draining INTEGER NOT NULL,
  registered_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS registration_tokens (
  token_hash TEXT PRIMARY KEY,
  compute_name TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  spent_at INTEGER NOT NULL,
  spent_by TEXT NOT NULL,
  key_hash TEXT NOT NULL DEFAULT '',
  max_uses INTEGER NOT NULL DEFAULT 1,
  expires_at INTEGER NOT NULL DEFAULT 0,
  revoked INTEGER NOT NULL DEFAULT 0,
  nodes TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  experiment_name TEXT NOT NULL,
  compute_name TEXT NOT NULL,
  job_file_name TEXT NOT NULL,
  job_text TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  node_id TEXT NOT NULL,
  queue_seq INTEGER NOT NULL,
  exit_code INTEGER,
  error TEXT NOT NULL,
  timings TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  queued_at INTEGER NOT NULL,
  started_at INTEGER NOT NULL,
  ended_at INTEGER NOT NULL,
  not_responding_since INTEGER NOT NULL,
  has_outputs INTEGER NOT NULL,
  dropped_logs TEXT NOT NULL DEFAULT '{}',
  shares TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS leases (
  run_id TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  node_id TEXT NOT NULL,
  leased_at INTEGER NOT NULL,
  PRIMARY KEY (run_id, epoch));
CREATE TABLE IF NOT EXISTS computes (
  name TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  settings TEXT NOT NULL,
  created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS parallel_plans (
  run_id TEXT PRIMARY KEY,
  plan TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parallel_batches (
  run_id TEXT NOT NULL,
  mini_batch INTEGER NOT NULL,
  state TEXT NOT NULL,
  PRIMARY KEY (run_id, mini_batch));
)sql";

Error sqlite_error(sqlite3* db, const std::string& what) {
  return Error{errors::kStoreError, what + ": " + sqlite3_errmsg(db)};
}

// A prepared statement with positional binding; finalized on destruction.
class Statement {
 public:
  Statement() = default;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  Result<void> prepare(sqlite3* db, const char* sql) {
    db_ = db;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) != SQLITE_OK) {
      return sqlite_error(db, "preparing a statement");
    }
    return ok();
  }

  Statement& bind(int index, const std::string& text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind(int index, std::int64_t value) {
    sqlite3_bind_int64(stmt_, index, value);
    return *this;
  }
  Statement& bind(int index, std::optional<int> value) {
    if (value) {
      sqlite3_bind_int64(stmt_, index, *value);
    } else {
      sqlite3_bind_null(stmt_, index);
    }
    return *this;
  }

  // Runs a statement that returns no rows and resets it for the next use.
  Result<void> execute(const std::string& what) {
    int rc = sqlite3_step(stmt_);
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    if (rc != SQLITE_DONE) return sqlite_error(db_, what);
    return ok();
  }

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

// Reads the columns of one result row by position.
class Row {
 public:
  explicit Row(sqlite3_stmt* stmt) : stmt_(stmt) {}
  std::string text(int i) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, i));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, i))) : "";
  }
  std::int64_t integer(int i) const { return sqlite3_column_int64(stmt_, i); }
  bool is_null(int i) const { return sqlite3_column_type(stmt_, i) == SQLITE_NULL; }
  nlohmann::json json(int i) const {
    return nlohmann::json::parse(text(i), nullptr, /*allow_exceptions=*/false);
  }

 private:
  sqlite3_stmt* stmt_;
};

// Runs `sql` and calls `each(Row)` for every row.
template <class Each>
Result<void> for_each_row(sqlite3* db, const char* sql, Each each) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK) {
    return sqlite_error(db, "reading the store");
  }
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) each(Row(stmt));
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) return sqlite_error(db, "reading the store");
  return ok();
}

NodeRecord node_from(const Row& row) {
  NodeRecord n;
  n.node_id = row.text(0);
  n.token_hash = row.text(1);
  n.compute_name = row.text(2);
  n.hostname = row.text(3);
  auto ips = row.json(4);
  if (ips.is_array()) {
    for (const auto& ip : ips) {
      if (ip.is_string()) n.ips.push_back(ip.get<std::string>());
    }
  }
  n.ssh_port = static_cast<int>(row.integer(5));
  n.cpus = static_cast<int>(row.integer(6));
  n.memory_bytes = row.integer(7);
  n.gpus = static_cast<int>(row.integer(8));
  n.labels = row.json(9);
  if (!n.labels.is_object()) n.labels = nlohmann::json::object();
  n.agent_version = row.text(10);
  n.state = row.text(11);
  n.reason = row.text(12);
  n.lost = row.integer(13) != 0;
  n.draining = row.integer(14) != 0;
  n.registered_at = row.integer(15);
  return n;
}

RunRecord run_from(const Row& row) {
  RunRecord r;
  r.run_id = row.text(0);
  r.experiment_name = row.text(1);
  r.compute_name = row.text(2);
  r.job_file_name = row.text(3);
  r.status = spec::run_status_from_string(row.text(4)).value_or(spec::RunStatus::Failed);
  r.epoch = row.integer(5);
  r.node_id = row.text(6);
  r.queue_seq = row.integer(7);
  if (!row.is_null(8)) r.exit_code = static_cast<int>(row.integer(8));
  r.error = row.json(9);
  if (r.error.is_discarded()) r.error = nullptr;
  r.timings = row.json(10);
  if (!r.timings.is_object()) r.timings = nlohmann::json::object();
  r.created_at = row.integer(11);
  r.queued_at = row.integer(12);
  r.started_at = row.integer(13);
  r.ended_at = row.integer(14);
  r.not_responding_since = row.integer(15);
  r.has_outputs = row.integer(16) != 0;
  return r;
}

// The shares of a run across nodes, as one JSON column: {"node_count", "nodes", "statuses",
// "past_holders"}; "{}" for a run of one node.
std::string shares_json(const RunRecord& r) {
  if (r.node_count <= 1) return "{}";
  nlohmann::json statuses = nlohmann::json::array();
  for (auto status : r.share_statuses) statuses.push_back(spec::to_string(status));
  return nlohmann::json{{"node_count", r.node_count},
                        {"master_port", r.master_port},
                        {"nodes", r.share_nodes},
                        {"statuses", statuses},
                        {"past_holders", r.share_past_holders}}
      .dump();
}

// Anything malformed is read as a run of one node: the file is this store's own, so that only
// happens to a damaged database, and the run is then at worst leased to one node and refused there.
void read_shares(const nlohmann::json& shares, RunRecord& r) {
  auto strings = [](const nlohmann::json& list) {
    std::vector<std::string> out;
    if (!list.is_array()) return out;
    for (const auto& item : list)
      if (item.is_string()) out.push_back(item.get<std::string>());
    return out;
  };
  if (!shares.is_object() || !shares.contains("node_count") ||
      !shares["node_count"].is_number_integer())
    return;
  r.node_count = std::clamp(shares["node_count"].get<int>(), 1, wire::kMaxNodeCount);
  if (shares.contains("master_port") && shares["master_port"].is_number_integer())
    r.master_port = std::clamp(shares["master_port"].get<int>(), 1, 65535);
  r.share_nodes = strings(shares.value("nodes", nlohmann::json()));
  for (const auto& status : strings(shares.value("statuses", nlohmann::json())))
    r.share_statuses.push_back(
        spec::run_status_from_string(status).value_or(spec::RunStatus::Queued));
  r.share_past_holders = strings(shares.value("past_holders", nlohmann::json()));
  if (r.share_statuses.size() != r.share_nodes.size()) {
    r.share_nodes.clear();
    r.share_statuses.clear();
  }
}

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  ~SqliteStore() override { sqlite3_close_v2(db_); }

  Result<void> prepare_statements() {
    if (auto r = begin_.prepare(db_, "BEGIN"); !r) return r;
    if (auto r = commit_.prepare(db_, "COMMIT"); !r) return r;
    if (auto r = put_node_.prepare(db_,
                                   "INSERT OR REPLACE INTO nodes VALUES "
                                   "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)");
        !r) {
      return r;
    }
    if (auto r = put_token_.prepare(
            db_,
            "INSERT OR REPLACE INTO registration_tokens (token_hash, compute_name, created_at, "
            "spent_at, spent_by, key_hash, max_uses, expires_at, revoked, nodes) VALUES "
            "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)");
        !r) {
      return r;
    }
    // An upsert, not INSERT OR REPLACE: the job text column is written once by put_job_text and
    // must survive every later update of the run.
    if (auto r = put_run_.prepare(
            db_,
            "INSERT INTO runs (run_id, experiment_name, compute_name, job_file_name, status, "
            "epoch, node_id, queue_seq, exit_code, error, timings, created_at, queued_at, "
            "started_at, ended_at, not_responding_since, has_outputs, dropped_logs, shares) "
            "VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19) "
            "ON CONFLICT(run_id) DO UPDATE SET status=?5, epoch=?6, node_id=?7, queue_seq=?8, "
            "exit_code=?9, error=?10, timings=?11, queued_at=?13, started_at=?14, ended_at=?15, "
            "not_responding_since=?16, has_outputs=?17, dropped_logs=?18, shares=?19");
        !r) {
      return r;
    }
    if (auto r = put_job_.prepare(db_, "UPDATE runs SET job_text=?2 WHERE run_id=?1"); !r) {
      return r;
    }
    if (auto r =
            put_parallel_plan_.prepare(db_, "INSERT OR REPLACE INTO parallel_plans VALUES (?1,?2)");
        !r) {
      return r;
    }
    if (auto r = put_parallel_batch_.prepare(
            db_, "INSERT OR REPLACE INTO parallel_batches VALUES (?1,?2,?3)");
        !r) {
      return r;
    }
    if (auto r = delete_node_.prepare(db_, "DELETE FROM nodes WHERE node_id=?1"); !r) return r;
    if (auto r = put_compute_.prepare(db_, "INSERT OR REPLACE INTO computes VALUES (?1,?2,?3,?4)");
        !r)
      return r;
    if (auto r = delete_compute_.prepare(db_, "DELETE FROM computes WHERE name=?1"); !r) return r;
    if (auto r = delete_parallel_plan_.prepare(db_, "DELETE FROM parallel_plans WHERE run_id=?1");
        !r) {
      return r;
    }
    if (auto r =
            delete_parallel_batches_.prepare(db_, "DELETE FROM parallel_batches WHERE run_id=?1");
        !r) {
      return r;
    }
    return put_lease_.prepare(db_, "INSERT OR REPLACE INTO leases VALUES (?1,?2,?3,?4)");
  }

  Result<StoreContents> load() override {
    StoreContents contents;
    auto nodes = for_each_row(db_, "SELECT * FROM nodes",
                              [&](const Row& row) { contents.nodes.push_back(node_from(row)); });
    if (!nodes) return nodes.error();
    auto tokens = for_each_row(
        db_,
        "SELECT token_hash, compute_name, created_at, spent_at, spent_by, key_hash, max_uses, "
        "expires_at, revoked, nodes FROM registration_tokens",
        [&](const Row& row) {
          RegistrationTokenRecord token{row.text(0),    row.text(1), row.integer(2),
                                        row.integer(3), row.text(4), row.text(5)};
          token.max_uses = row.integer(6);
          token.expires_at = row.integer(7);
          token.revoked = row.integer(8) != 0;
          // A list that does not read back would make a used-up token usable again: the
          // token is then taken as used up instead.
          auto nodes = parse_untrusted_json(row.text(9));
          if (nodes.is_array()) {
            token.nodes = std::move(nodes);
          } else {
            token.revoked = true;
          }
          contents.registration_tokens.push_back(std::move(token));
        });
    if (!tokens) return tokens.error();
    auto runs = for_each_row(
        db_,
        "SELECT run_id, experiment_name, compute_name, job_file_name, status, epoch, node_id, "
        "queue_seq, exit_code, error, timings, created_at, queued_at, started_at, ended_at, "
        "not_responding_since, has_outputs, job_text, dropped_logs, shares FROM runs ORDER BY "
        "created_at, run_id",
        [&](const Row& row) {
          RunRecord run = run_from(row);
          auto dropped = parse_untrusted_json(row.text(18));
          if (dropped.is_object()) run.dropped_logs = std::move(dropped);
          read_shares(parse_untrusted_json(row.text(19)), run);
          if (!spec::is_terminal(run.status)) contents.live_job_texts[run.run_id] = row.text(17);
          contents.runs.push_back(std::move(run));
        });
    if (!runs) return runs.error();
    auto leases = for_each_row(db_, "SELECT * FROM leases", [&](const Row& row) {
      contents.leases.push_back(
          LeaseRecord{row.text(0), row.integer(1), row.text(2), row.integer(3)});
    });
    if (!leases) return leases.error();
    auto computes = for_each_row(
        db_, "SELECT name, kind, settings, created_at FROM computes", [&](const Row& row) {
          auto settings = parse_untrusted_json(row.text(2));
          contents.computes.push_back(ComputeRecord{
              row.text(0), row.text(1), settings.is_object() ? settings : nlohmann::json::object(),
              row.integer(3)});
        });
    if (!computes) return computes.error();
    auto plans = for_each_row(db_, "SELECT run_id, plan FROM parallel_plans", [&](const Row& row) {
      contents.parallel_plans[row.text(0)] = parse_untrusted_json(row.text(1));
    });
    if (!plans) return plans.error();
    auto batches = for_each_row(
        db_, "SELECT run_id, mini_batch, state FROM parallel_batches ORDER BY run_id, mini_batch",
        [&](const Row& row) {
          contents.parallel_batches[row.text(0)].emplace_back(static_cast<int>(row.integer(1)),
                                                              parse_untrusted_json(row.text(2)));
        });
    if (!batches) return batches.error();
    return contents;
  }

  Result<void> begin() override { return begin_.execute("starting a transaction"); }
  Result<void> commit() override { return commit_.execute("committing"); }
  void rollback() override { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }

  Result<void> put_node(const NodeRecord& n) override {
    return put_node_.bind(1, n.node_id)
        .bind(2, n.token_hash)
        .bind(3, n.compute_name)
        .bind(4, n.hostname)
        .bind(5, dump_json(n.ips))
        .bind(6, std::int64_t{n.ssh_port})
        .bind(7, std::int64_t{n.cpus})
        .bind(8, n.memory_bytes)
        .bind(9, std::int64_t{n.gpus})
        .bind(10, dump_json(n.labels))
        .bind(11, n.agent_version)
        .bind(12, n.state)
        .bind(13, n.reason)
        .bind(14, std::int64_t{n.lost})
        .bind(15, std::int64_t{n.draining})
        .bind(16, n.registered_at)
        .execute("storing node " + n.node_id);
  }

  Result<void> delete_node(const std::string& node_id) override {
    return delete_node_.bind(1, node_id).execute("forgetting node " + node_id);
  }

  Result<void> put_registration_token(const RegistrationTokenRecord& t) override {
    return put_token_.bind(1, t.token_hash)
        .bind(2, t.compute_name)
        .bind(3, t.created_at)
        .bind(4, t.spent_at)
        .bind(5, t.spent_by)
        .bind(6, t.key_hash)
        .bind(7, t.max_uses)
        .bind(8, t.expires_at)
        .bind(9, std::int64_t{t.revoked})
        .bind(10, dump_json(t.nodes))
        .execute("storing a registration token");
  }

  Result<void> put_run(const RunRecord& r) override {
    return put_run_.bind(1, r.run_id)
        .bind(2, r.experiment_name)
        .bind(3, r.compute_name)
        .bind(4, r.job_file_name)
        .bind(5, std::string(spec::to_string(r.status)))
        .bind(6, r.epoch)
        .bind(7, r.node_id)
        .bind(8, r.queue_seq)
        .bind(9, r.exit_code)
        .bind(10, dump_json(r.error))
        .bind(11, dump_json(r.timings))
        .bind(12, r.created_at)
        .bind(13, r.queued_at)
        .bind(14, r.started_at)
        .bind(15, r.ended_at)
        .bind(16, r.not_responding_since)
        .bind(17, std::int64_t{r.has_outputs})
        .bind(18, dump_json(r.dropped_logs))
        .bind(19, shares_json(r))
        .execute("storing run " + r.run_id);
  }

  Result<void> put_compute(const ComputeRecord& c) override {
    return put_compute_.bind(1, c.name)
        .bind(2, c.kind)
        .bind(3, dump_json(c.settings))
        .bind(4, c.created_at)
        .execute("storing compute " + c.name);
  }

  Result<void> delete_compute(const std::string& name) override {
    return delete_compute_.bind(1, name).execute("forgetting compute " + name);
  }

  Result<void> put_job_text(const std::string& run_id, const std::string& text) override {
    return put_job_.bind(1, run_id).bind(2, text).execute("storing the job of run " + run_id);
  }

  Result<void> put_lease(const LeaseRecord& l) override {
    return put_lease_.bind(1, l.run_id)
        .bind(2, l.epoch)
        .bind(3, l.node_id)
        .bind(4, l.leased_at)
        .execute("storing a lease of run " + l.run_id);
  }

  Result<void> put_parallel_plan(const std::string& run_id, const std::string& plan) override {
    return put_parallel_plan_.bind(1, run_id).bind(2, plan).execute(
        "storing the mini-batches of run " + run_id);
  }

  Result<void> put_parallel_batch(const std::string& run_id, int mini_batch,
                                  const std::string& state) override {
    return put_parallel_batch_.bind(1, run_id)
        .bind(2, std::int64_t{mini_batch})
        .bind(3, state)
        .execute("storing a mini-batch of run " + run_id);
  }

  Result<void> delete_parallel(const std::string& run_id) override {
    if (auto r = delete_parallel_plan_.bind(1, run_id).execute("forgetting mini-batches"); !r)
      return r;
    return delete_parallel_batches_.bind(1, run_id).execute("forgetting mini-batches");
  }

 private:
  sqlite3* db_;
  Statement begin_, commit_, put_node_, put_token_, put_run_, put_job_, put_lease_;
  Statement delete_node_, put_compute_, delete_compute_;
  Statement put_parallel_plan_, put_parallel_batch_, delete_parallel_plan_,
      delete_parallel_batches_;
};

Result<void> exec(sqlite3* db, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    Error error{"StoreError", std::string("setting up the store: ") + (message ? message : "")};
    sqlite3_free(message);
    return error;
  }
  return ok();
}

// Columns added after a data directory may have been made: a database from before gains them with
// their defaults.
Result<void> add_missing_columns(sqlite3* db) {
  struct Column {
    const char* table;
    const char* name;
    const char* add;
  };
  for (const auto& column :
       {Column{"registration_tokens", "key_hash",
               "ALTER TABLE registration_tokens ADD COLUMN key_hash TEXT NOT NULL DEFAULT ''"},
        Column{"registration_tokens", "max_uses",
               "ALTER TABLE registration_tokens ADD COLUMN max_uses INTEGER NOT NULL DEFAULT 1"},
        Column{"registration_tokens", "expires_at",
               "ALTER TABLE registration_tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0"},
        Column{"registration_tokens", "revoked",
               "ALTER TABLE registration_tokens ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0"},
        Column{"registration_tokens", "nodes",
               "ALTER TABLE registration_tokens ADD COLUMN nodes TEXT NOT NULL DEFAULT '[]'"},
        Column{"runs", "dropped_logs",
               "ALTER TABLE runs ADD COLUMN dropped_logs TEXT NOT NULL DEFAULT '{}'"},
        Column{"runs", "shares",
               "ALTER TABLE runs ADD COLUMN shares TEXT NOT NULL DEFAULT '{}'"}}) {
    bool present = false;
    std::string pragma = std::string("PRAGMA table_info(") + column.table + ")";
    auto listed = for_each_row(db, pragma.c_str(), [&](const Row& row) {
      present = present || row.text(1) == column.name;
    });
    if (!listed) return listed;
    if (present) continue;
    if (auto added = exec(db, column.add); !added) return added;
  }
  return ok();
}

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Error error{"StoreError",
                "opening " + path + ": " + (db ? sqlite3_errmsg(db) : "out of memory")};
    sqlite3_close_v2(db);
    return error;
  }
  auto store = std::make_unique<SqliteStore>(db);
  // WAL lets a commit be one append to the log; synchronous=NORMAL skips the fsync per commit
  // (the WAL is synced at checkpoints), which keeps commits cheap enough for the load target.
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                             "PRAGMA busy_timeout=5000", kSchema}) {
    if (auto r = exec(db, pragma); !r) return r.error();
  }
  if (auto r = add_missing_columns(db); !r) return r.error();
  if (auto r = store->prepare_statements(); !r) return r.error();
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace amlnode::controlplane
