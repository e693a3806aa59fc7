#include "executors/shim/protocol.h"
