#pragma once

// `amlnode spark-submit [--spark-submit PATH] [--yarn PATH] -- ARGS...`: a PySpark run's process on
// an HDInsight node (docs/hdinsight.md). It runs spark-submit (the path the plan found on the
// agent's PATH) with ARGS, passing its output through, and learns the YARN application's id from
// it ("Submitting application application_..." / "Submitted application ..."). A SIGTERM or
// SIGINT (a cancel, the deadline: the shim signals every process of the run at once) kills the
// application in YARN (`yarn application -kill ID`, within 45 s; also when the id is read only
// after the stop), and stops spark-submit: stopping the local process alone would leave the
// application running on the cluster. In cluster mode the driver runs in YARN, so once
// spark-submit has ended the driver's log is fetched (`yarn logs -applicationId ID -am 1`, within
// 60 s) into the run's output. The run ends with spark-submit (what its children still write is
// read for 2 s more), with its exit code; 128 + the signal after a stop.

#include <string>
#include <vector>

namespace amlnode::agent {

int run_spark_submit(const std::vector<std::string>& args);

}  // namespace amlnode::agent
