"""Prompt flows that talk to tunegate endpoints (`tunegate promptflow`, smoke.promptflow). Each folder is a flow
`pf` runs as is: `pf flow test --flow promptflows/chat --interactive`, `pf flow serve --source promptflows/chat`."""
