package main

import "github.com/lgrun/lgrun"

// engine returns the engine the commands load and run graphs with: the
// built-in kinds, reading API keys and LGRUN_PROVIDER through io.Getenv.
// All engine wiring of the CLI goes through package lgrun.
func (io *IO) engine() *lgrun.Engine {
	getenv := io.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	eng, err := lgrun.New(lgrun.WithGetenv(getenv), lgrun.WithVersion(Version))
	if err != nil {
		// The options register no kinds, so nothing can clash.
		panic("lgrun: default engine: " + err.Error())
	}
	return eng
}
