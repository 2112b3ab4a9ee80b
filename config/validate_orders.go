package config

import (
	"fmt"
	"slices"
)

// orders fills order.application and checks every order of job j.
func (k *checker) orders(jp string, j *Job) {
	p := jp + ".order"
	o := &j.Order
	if len(o.Application) == 0 {
		// Defaulted from application.host, which application() checked.
		if j.Application.Host != "" {
			o.Application = []string{j.Application.Host}
		}
	} else {
		if j.Application.Host != "" && o.Application[0] != j.Application.Host {
			k.errorf(p+".application[0]", "is %q but must be the application host %q (%s.application.host): the application starts where it runs now", o.Application[0], j.Application.Host, jp)
		}
		k.orderList(p+".application", o.Application, false)
	}
	k.orderList(p+".source", o.Source, true)
	repo := j.Repository.Storage
	k.attachments(p+".source", o.Source, "source", j.Source.Storage, repo)
	if len(j.Targets) == 0 {
		k.orderList(p+".target", o.Target, true)
		k.attachments(p+".target", o.Target, "target", j.Target.Storage, repo)
	}
	for ti, t := range j.Targets {
		tp := fmt.Sprintf("%s.targets[%d].order", jp, ti)
		k.orderList(tp, t.Order, true)
		k.attachments(tp, t.Order, "target", t.Storage, repo)
	}
	if j.Failback != nil {
		k.failback(jp, j)
	}
}

// failback checks a job's failback section: the target side's application (optional) and
// how a failback knows the primary application is stopped.
func (k *checker) failback(jp string, j *Job) {
	f := j.Failback
	if a := f.Application; a != nil {
		fp := jp + ".failback.application"
		k.application(fp, a)
		if a.Takeover != "" {
			k.errorf(fp+".takeover", "not used by failback: the failback order is the job's target order")
		}
		if a.Check != "" {
			k.errorf(fp+".check", "not used by failback: the primary's %s.application.check tells whether the primary application is stopped", jp)
		}
	}
	pp := jp + ".failback.primary_stopped"
	switch {
	case f.PrimaryStopped == "" && !k.given(pp, true):
		f.PrimaryStopped = PrimaryStoppedCheck
	case f.PrimaryStopped != PrimaryStoppedCheck && f.PrimaryStopped != PrimaryStoppedOperator:
		k.errorf(pp, "%q is not valid: want %q (default: %s.application.check says so) or %q (no check script: the operator's --yes says so)", f.PrimaryStopped, PrimaryStoppedCheck, jp, PrimaryStoppedOperator)
		return
	}
	check := j.Application.Check
	switch {
	case f.PrimaryStopped == PrimaryStoppedOperator && check != "":
		k.errorf(pp, "is %q but %s.application.check is set (%s): the check script runs; remove one of them", PrimaryStoppedOperator, jp, check)
	case f.Allow && f.PrimaryStopped == PrimaryStoppedCheck && check == "":
		k.errorf(jp+".failback.allow", "failback must know that the primary application is stopped: set %s.application.check (a script that exits %d when it is stopped, %d when it runs) or %s: %s (the operator's --yes says so)",
			jp, CheckExitStopped, CheckExitRunning, pp, PrimaryStoppedOperator)
	}
}

func (k *checker) orderList(p string, hosts []string, required bool) {
	if len(hosts) == 0 {
		if required {
			k.errorf(p, "required: list at least one host, in order of preference (hosts: %s)", listOrNone(k.c.hostNames()))
		}
		return
	}
	for i, h := range hosts {
		ip := fmt.Sprintf("%s[%d]", p, i)
		if first := slices.Index(hosts, h); first < i {
			k.errorf(ip, "host %q is listed twice (also at %s[%d])", h, p, first)
			continue
		}
		if _, ok := k.hostIdx[h]; !ok {
			k.errorf(ip, "host %q is not defined (hosts: %s)", h, listOrNone(k.c.hostNames()))
		}
	}
}

// attachments checks that every host of an order has the role's storage
// mounted, and can reach the repository: mounted too, or over SSH through a
// host attached to the repository storage.
func (k *checker) attachments(p string, hosts []string, role, storage, repo string) {
	for i, name := range hosts {
		hi, ok := k.hostIdx[name]
		if !ok || slices.Index(hosts, name) < i {
			continue // reported by orderList
		}
		h := k.c.Hosts[hi]
		ip := fmt.Sprintf("%s[%d]", p, i)
		if _, def := k.storageIdx[storage]; def {
			if _, ok := h.Mount(storage); !ok {
				what := role
				if storage == repo {
					what = role + " and repository"
				}
				k.errorf(ip, "host %q is not attached to storage %q (%s); attach it (hosts[%d].attach), or remove it from the order", name, storage, what, hi)
			}
		}
		if _, def := k.storageIdx[repo]; def && repo != storage {
			if _, ok := h.Mount(repo); !ok && len(k.sshHostsOf(repo)) == 0 {
				k.errorf(ip, "host %q is not attached to storage %q (repository), and no host attached to %q has connect: {ssh: ...} to reach it through (attached: %s); attach it (hosts[%d].attach), or give a host attached to %q an ssh connection",
					name, repo, repo, listOrNone(k.attachedTo(repo)), hi, repo)
			}
		}
	}
}

// attachedTo lists the hosts attached to storage, in config order.
func (k *checker) attachedTo(storage string) []string {
	var out []string
	for _, h := range k.c.Hosts {
		if _, ok := h.Mount(storage); ok {
			out = append(out, h.Name)
		}
	}
	return out
}

// sshHostsOf lists the hosts attached to storage that other agents reach over SSH.
func (k *checker) sshHostsOf(storage string) []string {
	var out []string
	for _, h := range k.c.Hosts {
		if _, ok := h.Mount(storage); ok && h.Connect.SSH != nil {
			out = append(out, h.Name)
		}
	}
	return out
}
