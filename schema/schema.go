// Package schema embeds the JSON Schema of lgrun graph files. It has no logic:
// spec validates against it, `lgrun schema` prints it.
package schema

import _ "embed"

// Graph is the JSON Schema (draft 2020-12) of a graph file.
//
//go:embed graph.schema.json
var Graph []byte

// GraphURL is the $id of [Graph].
const GraphURL = "https://lgrun.dev/schema/graph.schema.json"

// Test is the JSON Schema of graph test files (*.test.yaml).
//
//go:embed test.schema.json
var Test []byte

// TestURL is the $id of [Test].
const TestURL = "https://lgrun.dev/schema/test.schema.json"
