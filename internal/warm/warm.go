// Package warm exists only to pin dependencies while the skeleton is written.
package warm

import (
	_ "github.com/kopia/kopia/repo"
	_ "github.com/kopia/kopia/snapshot/restore"
	_ "github.com/kopia/kopia/snapshot/upload"
	_ "github.com/spf13/cobra"
	_ "github.com/stretchr/testify/require"
	_ "github.com/temporalio/ui-server/v2/server"
	_ "go.temporal.io/api/workflowservice/v1"
	_ "go.temporal.io/sdk/client"
	_ "go.temporal.io/sdk/testsuite"
	_ "go.temporal.io/server/temporal"
	_ "go.temporal.io/server/temporaltest"
	_ "go.uber.org/zap"
	_ "gopkg.in/yaml.v3"
	_ "golang.org/x/crypto/ssh"
)
