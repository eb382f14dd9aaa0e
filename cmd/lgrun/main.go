// Command lgrun runs, resumes, inspects and validates lgrun agent graphs.
package main

import "os"

func main() { os.Exit(Main()) }
