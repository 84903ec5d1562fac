#!/usr/bin/perl
# A scripted SMSC built on Perl's Net::SMPP (Debian libnet-smpp-perl), for our ESME's tests.
# Commands come on stdin, one a line; what happens goes to stdout, one event a line:
#   DELIVER seq text   deliver_sm with that sequence number (a temporary error answer makes it
#                      send the same PDU again after REDELIVER_AFTER seconds, as SMSCs do)
#   DATA seq text      data_sm with that sequence number, the text (UTF-8 here) as UCS-2 in
#                      message_payload
#   UNBIND | ENQUIRE   an unbind / an enquire_link to the ESME
#   NACK n             n generic_nack PDUs
#   SILENT | LOUD      stop / resume answering the ESME's enquire_link
#   DROP               close the connection without an unbind
# Events: LISTENING, CONNECTED, BIND cmd system_id password, BIND_FIELDS ..., RESP seq status,
# DATA_RESP seq status,
# REDELIVER seq, ENQUIRE seq (the ESME's), ENQUIRE_RESP seq, UNBIND (the ESME's), UNBIND_RESP,
# CLOSED, DROPPED.
use strict; use warnings; use Encode qw(decode encode); use Net::SMPP; use IO::Select; use Time::HiRes qw(time);
$| = 1;
my ($port) = @ARGV;
my $REDELIVER_AFTER = 0.3;
my $listen = Net::SMPP->new_listen('127.0.0.1', port => $port, smpp_version => 0x34)
  or die "listen: $!";
my $sel = IO::Select->new($listen, \*STDIN);
my ($smpp, $silent, $in) = (undef, 0, '');
my %texts;      # seq -> text of deliver_sm sent
my %redeliver;  # seq -> when to send it again
print "LISTENING\n";

sub deliver {
  my ($seq) = @_;
  $smpp->deliver_sm(source_addr => '79005556677', destination_addr => '79001230001',
                    short_message => $texts{$seq}, seq => $seq, async => 1) if $smpp;
}

sub gone {
  my ($event) = @_;
  $sel->remove($smpp);
  close $smpp;
  undef $smpp;
  print "$event\n";
}

sub command {
  my ($line) = @_;
  my ($cmd, $arg, $rest) = split / /, $line, 3;
  return print "NOT_CONNECTED $cmd\n" if !$smpp;
  if ($cmd eq 'DELIVER') { $texts{$arg} = $rest; deliver($arg); }
  elsif ($cmd eq 'DATA') {
    $smpp->data_sm(source_addr => '79005556677', destination_addr => '79001230001', data_coding => 8,
                   message_payload => encode('UTF-16BE', decode('UTF-8', $rest)), seq => $arg, async => 1);
  }
  elsif ($cmd eq 'UNBIND') { $smpp->unbind(async => 1); }
  elsif ($cmd eq 'ENQUIRE') { $smpp->enquire_link(async => 1); }
  elsif ($cmd eq 'NACK') { $smpp->generic_nack(seq => 9000 + $_, status => 3) for 1..$arg; }
  elsif ($cmd eq 'SILENT') { $silent = 1; }
  elsif ($cmd eq 'LOUD') { $silent = 0; }
  elsif ($cmd eq 'DROP') { gone('DROPPED'); return; }
  print "DONE $cmd\n";
}

sub pdu {
  my ($p) = @_;
  my $cmd = $p->{cmd};
  if ($cmd == 1 || $cmd == 2 || $cmd == 9) {
    print "BIND $cmd $p->{system_id} $p->{password}\n";
    printf "BIND_FIELDS version=%#x system_type=%s address_range=%s\n",
      $p->{interface_version}, $p->{system_type}, $p->{address_range};
    my %resp = (1 => 'bind_receiver_resp', 2 => 'bind_transmitter_resp', 9 => 'bind_transceiver_resp');
    my $method = $resp{$cmd};
    $smpp->$method(seq => $p->{seq}, system_id => 'perlsmsc', status => 0);
  } elsif ($cmd == 0x80000005) {
    print "RESP $p->{seq} $p->{status}\n";
    if ($p->{status} == 0x64 || $p->{status} == 0x58) { $redeliver{$p->{seq}} = time + $REDELIVER_AFTER; }
    else { delete $texts{$p->{seq}}; }
  } elsif ($cmd == 0x80000103) {
    print "DATA_RESP $p->{seq} $p->{status}\n";
  } elsif ($cmd == 0x15) {
    print "ENQUIRE $p->{seq}\n";
    $smpp->enquire_link_resp(seq => $p->{seq}) if !$silent;
  } elsif ($cmd == 0x80000015) { print "ENQUIRE_RESP $p->{seq}\n"; }
  elsif ($cmd == 6) { print "UNBIND\n"; $smpp->unbind_resp(seq => $p->{seq}); }
  elsif ($cmd == 0x80000006) { print "UNBIND_RESP\n"; }
  else { printf "PDU %#x %d\n", $cmd, $p->{seq}; }
}

while (1) {
  my $now = time;
  for my $seq (grep { $redeliver{$_} <= $now } keys %redeliver) {
    delete $redeliver{$seq};
    print "REDELIVER $seq\n";
    deliver($seq);
  }
  for my $fh ($sel->can_read(0.05)) {
    if (fileno($fh) == fileno($listen)) {
      my $c = $listen->accept or next;
      if ($smpp) { close $c; print "SECOND_CONNECTION\n"; next; }
      $smpp = $c;
      $sel->add($smpp);
      print "CONNECTED\n";
    } elsif (fileno($fh) == fileno(STDIN)) {
      my $n = sysread(STDIN, $in, 4096, length $in);
      exit 0 if !$n;
      while ($in =~ s/^(.*)\n//) { command($1); }
    } elsif ($smpp && fileno($fh) == fileno($smpp)) {
      my $p = $smpp->read_pdu();
      if (!$p) { gone('CLOSED'); next; }
      pdu($p);
    }
  }
}
