package activities

// Step names a step of a run. The values are recorded in run histories (ScriptInput.Step,
// heartbeat details, a run's status) and used as metric labels: they must not change.
type Step string

// The steps, in the order a replication run takes them, then the other workflows' steps.
const (
	StepPlan      Step = "plan"
	StepPreflight Step = "preflight"
	// StepCheck is a failback's check of the primary application (its check script).
	StepCheck   Step = "check"
	StepPrecopy Step = "precopy"
	StepQuiesce Step = "quiesce"
	StepPush    Step = "push"
	StepResume  Step = "resume"
	StepPull    Step = "pull"
	// StepPublish publishes a consistency group's replicas together.
	StepPublish Step = "publish"
	// StepTakeover runs a failed host's takeover script.
	StepTakeover Step = "takeover"
	StepVerify   Step = "verify"
	StepRestore  Step = "restore"
	StepMaintain Step = "maintain"
	StepTestCopy Step = "test-copy"
)

// StepInfo is what the workflows, the status and history views and the chaos and bench
// harnesses know of a step.
type StepInfo struct {
	Step Step
	// Role is the role whose agents run the step ("" for the plan: any agent).
	Role string
	// Activity is the activity type that runs it.
	Activity string
	// Writes is the storage the step writes, where its storage faults are: "repository"
	// or "target" ("" for scripts and checks).
	Writes string
}

// Steps is every step, in the order of the constants above.
var Steps = []StepInfo{
	{StepPlan, "", PlanName, ""},
	{StepPreflight, RoleSource, PreflightName, ""},
	{StepCheck, RoleApplication, RunScriptName, ""},
	{StepPrecopy, RoleSource, PrecopyName, "repository"},
	{StepQuiesce, RoleApplication, RunScriptName, ""},
	{StepPush, RoleSource, PushName, "repository"},
	{StepResume, RoleApplication, RunScriptName, ""},
	{StepPull, RoleTarget, PullName, "target"},
	{StepPublish, RoleTarget, PublishGroupName, "target"},
	{StepTakeover, "", RunScriptName, ""},
	{StepVerify, RoleTarget, VerifyName, "target"},
	{StepRestore, RoleTarget, RestoreName, "target"},
	{StepMaintain, RoleTarget, MaintainName, "repository"},
	{StepTestCopy, RoleTarget, TestCopyName, "target"},
}

// Info returns the step's row of Steps (zero for an unknown step).
func (s Step) Info() StepInfo {
	for _, i := range Steps {
		if i.Step == s {
			return i
		}
	}
	return StepInfo{}
}

// WritesRepository reports whether the step stores data in the job's repository.
func (s Step) WritesRepository() bool { return s.Info().Writes == "repository" }
