#!/usr/bin/env node
// dmctl entry point: runs the compiled oclif command tree from dist/.
import { execute } from '@oclif/core';
await execute({ dir: import.meta.url });
