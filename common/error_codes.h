#pragma once

// The error codes more than one place produces or tells apart (Error::code), so that a producer
// and the code that branches on it can never drift apart by a typo. Codes used in one place only
// stay literal there.

namespace amlnode::errors {

// The control plane could not be reached (a network error, a 502-504): retried, never a failure.
inline constexpr const char* kUnreachable = "Unreachable";
// The lease moved on: the run stops on this node and reports nothing more.
inline constexpr const char* kStaleEpoch = "StaleEpoch";
// Stopped on purpose (a cancel, the agent shutting down).
inline constexpr const char* kCanceled = "Canceled";
// A run held before a restart that never started a process: it is prepared afresh.
inline constexpr const char* kNotStarted = "NotStarted";
// The control plane refused a log chunk for good (its name, its budget).
inline constexpr const char* kRejected = "Rejected";
// The control plane does not know the caller's token (HTTP 401): a node that was removed.
inline constexpr const char* kUnauthorized = "Unauthorized";
// The run passed max_run_duration_seconds.
inline constexpr const char* kRunTimeout = "RunTimeout";
// The control plane's store or its files failed (503).
inline constexpr const char* kStoreError = "StoreError";
inline constexpr const char* kStorageError = "StorageError";
// A log stream name the control plane does not take (400).
inline constexpr const char* kInvalidStreamName = "InvalidStreamName";
// The run's supervisor ended without recording how the run ended.
inline constexpr const char* kSupervisorFailed = "SupervisorFailed";

}  // namespace amlnode::errors
