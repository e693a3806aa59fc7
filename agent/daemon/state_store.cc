#include "agent/daemon/state_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

namespace amlnode::agent {

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS identity (
  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
  node_id TEXT NOT NULL,
  node_token TEXT NOT NULL
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

// The database holds the node token, so the file is made owner-only before SQLite opens it.
// SQLite gives its -wal and -shm files the main file's permissions.
Result<void> create_private_file(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Error{"StateStoreError", "creating " + file.string() + ": " + std::strerror(errno)};
  int changed = ::fchmod(fd, 0600);
  int err = errno;
  ::close(fd);
  if (changed != 0) return Error{"StateStoreError", "chmod " + file.string() + ": " + std::strerror(err)};
  return ok();
}

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
    if (sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO identity (singleton, node_id, node_token) VALUES (1, ?, ?)",
                           -1, &insert.stmt, nullptr) != SQLITE_OK) {
      return store_error(db_, "storing the node identity");
    }
    sqlite3_bind_text(insert.stmt, 1, identity.node_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(insert.stmt, 2, identity.node_token.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(insert.stmt) != SQLITE_DONE) return store_error(db_, "storing the node identity");
    return ok();
  }

 private:
  sqlite3* db_;
  // The store is used from the worker pool; SQLite's own serialisation would do, but one writer at
  // a time keeps statements simple.
  std::mutex mutex_;
};

}  // namespace

Result<std::unique_ptr<StateStore>> open_sqlite_state_store(const std::filesystem::path& state_dir) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) return Error{"StateStoreError", "creating " + state_dir.string() + ": " + ec.message()};
  auto file = state_dir / "agent.db";
  if (auto created = create_private_file(file); !created) return created.error();
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
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
  return std::unique_ptr<StateStore>(std::make_unique<SqliteStateStore>(db));
}

}  // namespace amlnode::agent
