// ByteValued.swift: the types that may be copied to and from guest memory.
//
// A guest can write any bit pattern into its memory, so only plain-data types
// for which every bit pattern is a valid value may be read from it (integers
// and C structs made of integers). This marker protocol names them, as
// vm-memory's `ByteValued` does; conformances are listed here and nowhere else.
//
// x86 is little-endian, as is every structure KVM, multiboot, Linux and virtio
// define for x86 guests, so a load of a host integer is the spec's decoding.

/// A type for which every bit pattern is a valid value.
public protocol ByteValued: BitwiseCopyable {}

extension UInt8: ByteValued {}
extension UInt16: ByteValued {}
extension UInt32: ByteValued {}
extension UInt64: ByteValued {}
extension Int8: ByteValued {}
extension Int16: ByteValued {}
extension Int32: ByteValued {}
extension Int64: ByteValued {}
