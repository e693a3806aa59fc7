#include "spec/job.h"
