// Placeholder: see the redis harness task.
#pragma once
