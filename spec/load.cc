#include "spec/load.h"
