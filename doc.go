// Package lgrun is the Go API of lgrun: load a graph, open a checkpoint
// saver, register custom Go tools, node kinds and model providers, run a
// thread, resume it, and read its state and history.
//
// An [Engine] is the unit of configuration: it holds an environment of
// kinds (the built-in ones plus what [WithTool], [WithNodeKind] and
// [WithProvider] add) and the state its runs share: the checkpoint id
// clock and the models' rate limiters. Two engines in one process share
// nothing, so they do not interfere.
//
//	eng, err := lgrun.New(lgrun.WithTool("lookup", "Looks a word up.", params, lookup))
//	g, diags := eng.Load("agent.yaml")     // diags: warnings, or errors (then g is nil)
//	saver, err := lgrun.OpenSQLite("lgrun.db", nil) // or lgrun.Open(ctx, "postgres://…", nil)
//	res, err := eng.Run(ctx, g, saver, "t1", map[string]any{"question": "…"})
//
// The lgrun command and the `lgrun test` engine (package graphtest) are
// built on this package.
//
// Dependencies point one way: this package → builtin, checkpoint →
// runtime → spec → schema. The declaration side of a custom kind (name,
// settings, docs) lives in [spec.Registry]; its implementation in
// [builtin.Environment]; this package keeps the two in step.
//
// Secrets: an engine reads environment variables (API keys, base URLs)
// only through the function given with [WithGetenv]; without it, it reads
// none, so only models that need no key (the mock provider, local
// servers) work.
package lgrun
