package fidelity

import "encoding/binary"

// CapabilityV2 returns a security.capability value in the kernel's vfs_cap_data layout,
// revision 2 (what setcap writes): magic_etc, then permitted and inheritable as two
// little-endian 32-bit words each (low capabilities first). effective sets
// VFS_CAP_FLAGS_EFFECTIVE, setcap's "+e".
func CapabilityV2(permitted, inheritable uint64, effective bool) []byte {
	const revision2, flagEffective = 0x02000000, 0x000001
	magic := uint32(revision2)
	if effective {
		magic |= flagEffective
	}
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], magic)
	binary.LittleEndian.PutUint32(b[4:], uint32(permitted))
	binary.LittleEndian.PutUint32(b[8:], uint32(inheritable))
	binary.LittleEndian.PutUint32(b[12:], uint32(permitted>>32))
	binary.LittleEndian.PutUint32(b[16:], uint32(inheritable>>32))
	return b
}

// ACL entry tags of the kernel's POSIX ACL xattr format (include/uapi/linux/posix_acl.h).
const (
	ACLUserObj  uint16 = 0x01
	ACLUser     uint16 = 0x02
	ACLGroupObj uint16 = 0x04
	ACLGroup    uint16 = 0x08
	ACLMask     uint16 = 0x10
	ACLOther    uint16 = 0x20
)

// ACLEntry is one entry of a POSIX ACL; ID is used by ACLUser and ACLGroup only. Perm is
// rwx as 4|2|1.
type ACLEntry struct {
	Tag  uint16
	Perm uint16
	ID   uint32
}

// ACL returns the system.posix_acl_access / system.posix_acl_default value for entries, in
// the kernel's binary format: a little-endian version word (2), then per entry tag and
// perm (16 bits each) and id (32 bits; ACL_UNDEFINED_ID for entries without one). The
// kernel wants the entries in tag order, named ones by id; the caller gives them so.
func ACL(entries []ACLEntry) []byte {
	const version, undefinedID = 2, 0xffffffff
	b := binary.LittleEndian.AppendUint32(nil, version)
	for _, e := range entries {
		id := e.ID
		if e.Tag != ACLUser && e.Tag != ACLGroup {
			id = undefinedID
		}
		b = binary.LittleEndian.AppendUint16(b, e.Tag)
		b = binary.LittleEndian.AppendUint16(b, e.Perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	return b
}
