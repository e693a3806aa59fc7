#pragma once

// `amlnode spark-submit -- ARGS...`: a PySpark run's process on an HDInsight node
// (docs/hdinsight.md). It runs `spark-submit ARGS...` (from the run's PATH), passing its output
// through, and learns the YARN application's id from it ("Submitted application
// application_..."). A SIGTERM or SIGINT (a cancel, the deadline) first kills the application in
// YARN (`yarn application -kill ID`), then stops spark-submit: stopping the local process alone
// would leave the application running on the cluster. In cluster mode the driver runs in YARN, so
// once spark-submit has ended its log is fetched (`yarn logs -applicationId ID`) into the run's
// output. The exit code is spark-submit's (143 after a SIGTERM).

#include <string>
#include <vector>

namespace amlnode::agent {

int run_spark_submit(const std::vector<std::string>& args);

}  // namespace amlnode::agent
