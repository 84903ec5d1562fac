#!/usr/bin/perl
# An SMSC from Net::SMPP (Debian libnet-smpp-perl): accepts one bind, sends N deliver_sm,
# prints each response as "RESP seq status", answers enquire_link.
use strict; use warnings; use Net::SMPP;
$| = 1;
my ($port, $n) = @ARGV;
my $listen = Net::SMPP->new_listen('127.0.0.1', port => $port, smpp_version => 0x34) or die "listen: $!";
print "LISTENING\n";
my $smpp = $listen->accept or die "accept";
my $pdu = $smpp->read_pdu() or die "no bind";
print "BIND $pdu->{cmd} $pdu->{system_id} $pdu->{password}\n";
$smpp->bind_receiver_resp(seq => $pdu->{seq}, system_id => 'perlsmsc', status => 0) if $pdu->{cmd} == 1;
$smpp->bind_transceiver_resp(seq => $pdu->{seq}, system_id => 'perlsmsc', status => 0) if $pdu->{cmd} == 9;
for my $i (1..$n) {
  $smpp->deliver_sm(source_addr => '79005556677', destination_addr => '79001230001',
                    short_message => "perl $i", async => 1);
}
my $got = 0;
while ($got < $n) {
  my $r = $smpp->read_pdu() or last;
  if ($r->{cmd} == 0x15) { $smpp->enquire_link_resp(seq => $r->{seq}); next; }
  if ($r->{cmd} == 0x80000005) { print "RESP $r->{seq} $r->{status}\n"; $got++; }
}
print "DONE\n";
my $r = $smpp->read_pdu();
